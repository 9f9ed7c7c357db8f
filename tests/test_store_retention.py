"""Retention on a real Redis: the sweep removes what is due and only that, honours each final
state's retention and a watch's own, is bounded per call, and leaves every index and count in
step with the watches that remain; forget removes one watch; a re-armed watch is not swept."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest

from taskwarden import keys
from taskwarden.lifecycle import FINAL_STATES, Decision, State
from taskwarden.models import Registration, watch_id
from taskwarden.store.ops import SCHEMA_VERSION
from taskwarden.store.retention import Forgotten
from taskwarden.store.watches import Claim, Commit, Store

NOW = 1_700_000_000.0
KEEP = {"succeeded": 100.0, "failed": 1000.0, "cancelled": 50.0, "timed_out": 200.0, "error": 300.0}


@pytest.fixture
def kept(redis_url: str) -> Iterator[Store]:
    """A store whose final states are kept for the seconds of ``KEEP``."""
    store = Store.from_url(redis_url, history_limit=20, retention=KEEP)
    yield store
    store.close()


def reg(remote_id: str, provider: str = "geobox", **kw: object) -> Registration:
    return Registration.model_validate({"provider": provider, "remote_id": remote_id, **kw})


def claim(store: Store, wid: str, now: float) -> Claim:
    provider = store.get(wid).provider  # type: ignore[union-attr]
    store.redis.zadd(keys.due(provider), {wid: 0})
    return next(c for c in store.claim_due(provider, now, 10_000, now + 60) if c.watch_id == wid)


def end(store: Store, wid: str, state: State, now: float) -> None:
    """Take the watch to ``state`` through a commit, as a poll does (cancelled: by cancel)."""
    if state is State.CANCELLED:
        assert store.cancel(wid, now)
        return
    previous = store.get(wid).state  # type: ignore[union-attr]
    next_at = None if state.final else now + 30
    decision = Decision(state, state.upper(), None, 1.0, 0, next_at, note=f"to {state}")
    assert store.commit(Commit(claim(store, wid, now), decision, now, previous=previous))


def assert_consistent(store: Store) -> None:
    """Every index and count says exactly what the remaining watch hashes say (the test may
    list keys; the store never does)."""
    r = store.redis
    watches = {w["id"]: w for w in (r.hgetall(k) for k in r.keys(keys.WATCH + "*"))}
    ids = set(watches)
    assert set(r.zrange(keys.ALL, 0, -1)) == ids
    assert set(r.zrange(keys.UPDATED, 0, -1)) == ids
    by_provider: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    labels: dict[str, set[str]] = defaultdict(set)
    for wid, w in watches.items():
        by_provider[w["provider"]].add(wid)
        counts[w["provider"]][w["state"]] += 1
        for k, v in json.loads(w["labels"]).items():
            labels[keys.label(k, v)].add(wid)
    for state in State:
        assert set(r.zrange(keys.by_state(state), 0, -1)) == {
            wid for wid, w in watches.items() if w["state"] == state
        }, state
    final = {wid for wid, w in watches.items() if w["state"] in FINAL_STATES}
    assert set(r.zrange(keys.FINISHED, 0, -1)) == final
    for provider in r.smembers(keys.PROVIDERS):
        assert set(r.zrange(keys.by_provider(provider), 0, -1)) == by_provider[provider]
        stored = {s: int(n) for s, n in r.hgetall(keys.counts(provider)).items() if int(n)}
        assert stored == dict(counts[provider]), provider
        assert set(r.zrange(keys.due(provider), 0, -1)) <= by_provider[provider] - final
    assert {k: set(r.zrange(k, 0, -1)) for k in r.keys(keys.LABEL + "*")} == labels
    assert set(r.zrange(keys.LEASES, 0, -1)) <= ids
    for key in r.keys(keys.IN_FLIGHT + "*"):
        assert set(r.zrange(key, 0, -1)) <= ids, key
    assert {k[len(keys.HISTORY) :] for k in r.keys(keys.HISTORY + "*")} == ids
    assert {k[len(keys.RUNNING) :] for k in r.keys(keys.RUNNING + "*")} <= ids


def test_a_sweep_removes_what_is_due_and_every_index_and_count_stays_in_step(kept: Store) -> None:
    """Watches of two providers, with labels (one pair shared, one each), in every state; the
    sweep, 7 at a time, removes exactly the final ones whose state's retention has passed
    (with their history, label entries, counts...), and the rest agree with the indexes."""
    states = [State.PENDING, State.RUNNING, State.ARCHIVING, *sorted(FINAL_STATES)]
    for i in range(64):
        provider = "geobox" if i % 2 else "up42"
        labels = {"team": "a" if i % 3 else "b", "n": str(i), "odd=key": "x=y"}
        w, _ = kept.register(reg(f"t{i}", provider, labels=labels), NOW)
        state = states[i % len(states)]
        if state is not State.PENDING:
            end(kept, w.id, State.RUNNING, NOW + 1)
        if state not in (State.PENDING, State.RUNNING):
            end(kept, w.id, state, NOW + 2)
        kept.redis.set(keys.RUNNING + w.id, "token")
    assert_consistent(kept)

    at = NOW + 2 + 250  # past succeeded (100), cancelled (50), timed_out (200); not error, failed
    removed = 0
    while n := kept.sweep(at, limit=7):
        assert n <= 7
        removed += n
        assert_consistent(kept)
    left = Counter(w.state for w in kept.get_many([watch_id(p, f"t{i}") for i in range(64)
                                                   for p in ("geobox", "up42")]) if w)  # fmt: skip
    assert removed == 3 * 8
    assert left == {State.PENDING: 8, State.RUNNING: 8, State.ARCHIVING: 8, State.FAILED: 8,
                    State.ERROR: 8}  # fmt: skip
    assert kept.counts()["succeeded"] == 0 and kept.counts()["failed"] == 8
    assert kept.list_watches(labels={"team": "b"}, limit=500)[0]  # the others still listed

    assert kept.sweep(NOW + 2 + 1000, limit=500) == 16  # failed and error too, now
    assert_consistent(kept)
    assert kept.sweep(NOW + 10**9, limit=500) == 0  # what is not final is never swept


def test_a_watch_s_own_retention_overrides_its_state_s(kept: Store) -> None:
    """retention in the registration wins over the state's, shorter or longer."""
    short, _ = kept.register(reg("short", retention=10), NOW)
    long, _ = kept.register(reg("long", retention=5000), NOW)
    plain, _ = kept.register(reg("plain"), NOW)
    for w in (short, long, plain):
        end(kept, w.id, State.FAILED, NOW)
    assert kept.redis.zscore(keys.FINISHED, short.id) == NOW + 10
    assert kept.sweep(NOW + 11, 500) == 1 and kept.get(short.id) is None
    assert kept.sweep(NOW + 1001, 500) == 1 and kept.get(plain.id) is None
    assert kept.get(long.id) is not None and kept.get(long.id).retention == 5000  # type: ignore[union-attr]
    assert kept.sweep(NOW + 5001, 500) == 1 and kept.get(long.id) is None
    assert_consistent(kept)


def test_the_default_keeps_a_final_watch_thirty_days(store: Store) -> None:
    """Without settings, a final watch is kept 30 days."""
    w, _ = store.register(reg("t"), NOW)
    end(store, w.id, State.SUCCEEDED, NOW)
    assert store.redis.zscore(keys.FINISHED, w.id) == NOW + 30 * 24 * 3600
    assert store.sweep(NOW + 30 * 24 * 3600 - 1, 500) == 0


def test_a_re_armed_watch_leaves_the_index_and_is_scored_again_when_it_ends(kept: Store) -> None:
    """An error watch re-armed is not swept while it is watched again; its next end scores it
    from that end."""
    w, _ = kept.register(reg("t"), NOW)
    end(kept, w.id, State.ERROR, NOW)
    assert kept.rearm(w.id, NOW + 10) is not None
    assert kept.redis.zscore(keys.FINISHED, w.id) is None
    assert kept.sweep(NOW + 10**6, 500) == 0
    end(kept, w.id, State.SUCCEEDED, NOW + 20)
    assert kept.redis.zscore(keys.FINISHED, w.id) == NOW + 20 + KEEP["succeeded"]
    assert_consistent(kept)


def test_forget_removes_one_watch_now_and_refuses_a_live_one_unless_forced(kept: Store) -> None:
    """forget removes a final watch whatever its retention (a note after it leaves nothing); a
    live one is refused naming its state, unless forced (it leaves the in-flight count too); a
    check in flight then writes nothing; an unknown id is not found."""
    done, _ = kept.register(reg("done", labels={"a": "1"}), NOW)
    end(kept, done.id, State.SUCCEEDED, NOW)
    assert kept.forget(done.id) == Forgotten(found=True, removed=True)
    kept.note(done.id, NOW + 1, "abort sent to the platform")  # an abort that was under way
    assert kept.get(done.id) is None and kept.history(done.id) == []
    live, _ = kept.register(reg("live"), NOW)
    in_flight = claim(kept, live.id, NOW)
    assert kept.forget(live.id) == Forgotten(found=True, removed=False, state="pending")
    assert kept.get(live.id) is not None
    assert kept.in_flight("geobox", NOW) == 1
    assert kept.forget(live.id, force=True) == Forgotten(found=True, removed=True)
    assert kept.in_flight("geobox", NOW) == 0  # a removed watch's check is in flight no more
    decision = Decision(State.RUNNING, "RUN", None, 2.0, 0, NOW + 30, note="late")
    assert not kept.commit(Commit(in_flight, decision, NOW + 1, previous=State.PENDING))
    assert kept.get(live.id) is None
    assert kept.forget("nope") == Forgotten(found=False, removed=False)
    assert_consistent(kept)


def test_a_forgotten_watch_registered_again_starts_fresh(kept: Store) -> None:
    """The same task registered after forget is a new watch: pending, fence 0, its new labels
    only, one history line, counted once."""
    old, _ = kept.register(reg("t", labels={"v": "1"}), NOW)
    end(kept, old.id, State.RUNNING, NOW + 1)
    end(kept, old.id, State.FAILED, NOW + 2)
    assert kept.forget(old.id).removed
    new, created = kept.register(reg("t", labels={"v": "2"}), NOW + 3)
    assert created and new.id == old.id
    assert (new.state, new.fence, new.labels, new.finished_at) == (State.PENDING, 0, {"v": "2"},
                                                                   None)  # fmt: skip
    assert [h["note"] for h in kept.history(new.id)] == ["registered"]
    assert kept.list_watches(labels={"v": "1"})[0] == []
    assert kept.counts_by_provider()["geobox"]["failed"] == 0
    assert kept.counts_by_provider()["geobox"]["pending"] == 1
    assert kept.sweep(NOW + 10**6, 500) == 0  # nothing of the old watch is left to sweep
    assert_consistent(kept)


def test_backfill_scores_the_final_watches_an_older_version_left_unindexed(kept: Store) -> None:
    """A store at schema 1 has final watches but no finished index: one backfill scores them by
    when they ended plus their state's retention, from the state sets; live ones stay out."""
    ids = []
    for i, state in enumerate([State.SUCCEEDED, State.FAILED, State.RUNNING]):
        w, _ = kept.register(reg(f"t{i}"), NOW)
        end(kept, w.id, state, NOW + 5)
        ids.append(w.id)
    kept.redis.delete(keys.FINISHED)
    kept.redis.set(keys.SCHEMA, 1)
    done = kept.backfill_indexes(batch=1)
    assert (done.ran, done.watches, done.added) == (True, 2, 2)
    assert kept.redis.zscore(keys.FINISHED, ids[0]) == NOW + 5 + KEEP["succeeded"]
    assert kept.redis.zscore(keys.FINISHED, ids[1]) == NOW + 5 + KEEP["failed"]
    assert kept.redis.get(keys.SCHEMA) == str(SCHEMA_VERSION)
    assert_consistent(kept)


def test_a_stale_entry_never_holds_the_sweep_up(kept: Store) -> None:
    """An index entry left for a watch that is gone or not final (written by hand here: no
    script leaves one) is dropped by the sweep, which then reaches the due watch behind it."""
    live, _ = kept.register(reg("live"), NOW)
    done, _ = kept.register(reg("done"), NOW)
    end(kept, done.id, State.SUCCEEDED, NOW)
    kept.redis.zadd(keys.FINISHED, {"wgone": NOW - 2, live.id: NOW - 1})
    assert kept.sweep(NOW + 101, limit=2) == 0
    assert kept.redis.zrange(keys.FINISHED, 0, -1) == [done.id]
    assert kept.sweep(NOW + 101, limit=2) == 1
    assert kept.get(live.id) is not None
    assert_consistent(kept)
