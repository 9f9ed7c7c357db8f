"""The Redis store on a real Redis: idempotent registration, atomic claims, fencing, leases."""

from __future__ import annotations

import threading
from dataclasses import replace

from taskwarden import keys
from taskwarden.lifecycle import Decision, State
from taskwarden.models import Registration, watch_id
from taskwarden.store.ops import SCHEMA_VERSION, Backfill
from taskwarden.store.watches import Claim, Commit, Store

NOW = 1_700_000_000.0


def reg(remote_id: str = "t1", **kw: object) -> Registration:
    return Registration.model_validate({"provider": "geobox", "remote_id": remote_id, **kw})


def running(now: float, next_at: float | None = None) -> Decision:
    return Decision(State.RUNNING, "PROGRESS", 0.5, 2.0, 0, next_at, note="remote PROGRESS")


def test_register_is_idempotent(store: Store) -> None:
    """Registering the same provider and remote id twice yields one watch."""
    first, created1 = store.register(reg(labels={"a": "1"}), NOW)
    second, created2 = store.register(reg(labels={"b": "2"}), NOW + 5)
    assert (created1, created2) == (True, False)
    assert first.id == second.id == watch_id("geobox", "t1")
    assert second.labels == {"a": "1"}  # the repeat changes nothing
    assert store.redis.zcard("taskwarden:due:geobox") == 1
    assert [h["note"] for h in store.history(first.id)] == ["registered"]


def test_register_sets_deadline_from_timeout(store: Store) -> None:
    """A timeout becomes an absolute deadline; the default applies when none is given."""
    w1, _ = store.register(reg("a", timeout=60), NOW)
    w2, _ = store.register(reg("b"), NOW, default_timeout=30)
    w3, _ = store.register(reg("c"), NOW)
    assert (w1.deadline, w2.deadline, w3.deadline) == (NOW + 60, NOW + 30, None)


def test_claim_takes_only_due_watches_once(store: Store) -> None:
    """A claim returns due watches under a new fence and removes them from the schedule."""
    for i in range(5):
        store.register(reg(f"t{i}"), NOW + i)
    claims = store.claim_due("geobox", NOW + 2, 100, lease_until=NOW + 60)
    assert sorted(c.watch_id for c in claims) == sorted(
        watch_id("geobox", f"t{i}") for i in range(3)
    )
    assert all(c.fence == 1 for c in claims)
    assert store.claim_due("geobox", NOW + 2, 100, lease_until=NOW + 60) == []
    assert store.due_count("geobox") == 2


def test_concurrent_claims_never_overlap(store: Store, redis_url: str) -> None:
    """Two dispatchers claiming at once (two beats) never get the same watch."""
    for i in range(2000):
        store.register(reg(f"t{i}"), NOW)
    got: list[list[Claim]] = [[], []]

    def claimer(slot: int) -> None:
        s = Store.from_url(redis_url)
        while batch := s.claim_due("geobox", NOW, 50, NOW + 60):
            got[slot].extend(batch)
        s.redis.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [c.watch_id for c in got[0] + got[1]]
    assert len(ids) == len(set(ids)) == 2000


def test_commit_with_stale_fence_is_refused(store: Store) -> None:
    """Only the holder of the current fence may write; an overtaken job's result is dropped."""
    w, _ = store.register(reg(), NOW)
    old = store.claim_due("geobox", NOW, 10, NOW + 60)[0]
    assert store.reap_leases(NOW + 61) == 1  # lease expired: back on the schedule, fence bumped
    new = store.claim_due("geobox", NOW + 61, 10, NOW + 120)[0]
    assert new.fence > old.fence
    assert store.commit(Commit(old, running(NOW), NOW)) is False
    assert store.commit(Commit(new, running(NOW, NOW + 70), NOW + 62, previous=State.PENDING))
    after = store.get(w.id)
    assert after is not None and after.state is State.RUNNING and after.raw_status == "PROGRESS"
    assert store.list_watches(state="running") == ([after], None)
    assert store.list_watches(state="pending") == ([], None)
    assert store.redis.zscore("taskwarden:due:geobox", w.id) == NOW + 70
    assert store.redis.zscore("taskwarden:leases", w.id) is None
    assert store.history(w.id)[-1] == {
        "at": NOW + 62, "from": "pending", "to": "running", "raw": "PROGRESS", "note": "remote PROGRESS"
    }  # fmt: skip


def test_final_state_is_never_left(store: Store) -> None:
    """Once final, no commit (even with the right fence) moves a watch again."""
    w, _ = store.register(reg(), NOW)
    claim = store.claim_due("geobox", NOW, 10, NOW + 60)[0]
    done = Decision(State.FAILED, "FAILURE", None, None, 0, None, note="remote FAILURE")
    assert store.commit(Commit(claim, done, NOW))
    assert store.commit(Commit(claim, running(NOW, NOW + 5), NOW)) is False
    final = store.get(w.id)
    assert final is not None and final.state is State.FAILED and final.finished_at == NOW


def test_cancel_removes_from_schedule_and_fences_inflight(store: Store) -> None:
    """Cancelling stops polling and makes an in-flight poll's commit a no-op."""
    w, _ = store.register(reg(), NOW)
    claim = store.claim_due("geobox", NOW, 10, NOW + 60)[0]
    assert store.cancel(w.id, NOW + 1) is True
    assert store.cancel(w.id, NOW + 2) is False
    assert store.cancel("nope", NOW) is None
    assert store.commit(Commit(claim, running(NOW, NOW + 5), NOW)) is False
    assert store.due_count("geobox") == 0
    assert store.redis.zcard("taskwarden:leases") == 0
    got = store.get(w.id)
    assert got is not None and got.state is State.CANCELLED


def test_reaper_skips_final_watches(store: Store) -> None:
    """An expired lease on an ended watch is dropped, not rescheduled."""
    w, _ = store.register(reg(), NOW)
    store.claim_due("geobox", NOW, 10, NOW + 60)
    store.cancel(w.id, NOW)
    store.redis.zadd("taskwarden:leases", {w.id: NOW + 1})  # as if a lease lingered
    assert store.reap_leases(NOW + 100) == 1
    assert store.due_count("geobox") == 0


def test_history_is_bounded(store: Store) -> None:
    """History keeps only the newest history_limit entries."""
    w, _ = store.register(reg(), NOW)
    for i in range(30):
        claim = store.claim_due("geobox", NOW + i, 10, NOW + 1000)[0]
        d = Decision(State.PENDING, f"P{i}", None, 1.0, 0, NOW + i + 1, note=f"n{i}")
        assert store.commit(Commit(claim, d, NOW + i))
    history = store.history(w.id)
    assert len(history) == 20
    assert history[-1]["note"] == "n29"


def test_counts_and_list_filters(store: Store) -> None:
    """Counts per state and listing by state and provider agree with what was stored."""
    for i in range(3):
        store.register(reg(f"t{i}"), NOW + i)
    assert store.counts()["pending"] == 3
    assert [w.remote_id for w in store.list_watches(provider="geobox")[0]] == ["t2", "t1", "t0"]
    page, cursor = store.list_watches(state="pending", provider="geobox", limit=2)
    assert [w.remote_id for w in page] == ["t2", "t1"]
    assert cursor is not None
    assert store.list_watches(state="pending", provider="other") == ([], None)


def test_dead_letters_keep_reason_and_a_bounded_body(store: Store) -> None:
    """Refused input is kept newest first with its reason; a huge body is cut, not stored whole."""
    store.dead_letter(NOW, "queue", "first", {"provider": "x"})
    store.dead_letter(NOW + 1, "cli", "second", {"blob": "y" * 100_000})
    store.dead_letter(NOW + 2, "queue", "third", object())
    got = store.dead_letters(10)
    assert [(e["reason"], e["source"], e["at"]) for e in got] == [
        ("third", "queue", NOW + 2), ("second", "cli", NOW + 1), ("first", "queue", NOW)
    ]  # fmt: skip
    assert len(got[1]["body"]) == 4096
    assert got[2]["body"] == '{"provider": "x"}'


def test_backfill_indexes_what_an_older_version_left_out_once(store: Store) -> None:
    """Watches whose ``updated`` and label entries are missing (as an older version wrote them)
    are found by label and by updated range after one backfill, with their own times; an
    entry a live write made is left alone; a second backfill reads one key and scans nothing."""
    watches = [store.register(reg(f"old-{i}", labels={"team": "a" if i % 2 else "b", "n": str(i)}),
                              NOW + i)[0] for i in range(5)]  # fmt: skip
    claim = store.claim_due("geobox", NOW + 10, 1, NOW + 100)[0]  # the oldest, old-0
    assert store.commit(Commit(claim, running(NOW + 20), NOW + 20, previous=State.PENDING))
    ids = [w.id for w in watches]
    store.redis.zrem(keys.UPDATED, *ids)
    store.redis.delete(*store.redis.keys(keys.LABEL + "*"))

    def by_label(team: str) -> set[str]:
        return {w.id for w in store.list_watches(labels={"team": team}, limit=100)[0]}

    def updated_between(low: float, high: float) -> list[str]:
        page, _ = store.list_watches(updated_after=low, updated_before=high, sort="updated_at")
        return [w.id for w in page]

    assert by_label("a") == set() and updated_between(0, NOW + 100) == []
    store.redis.zadd(keys.UPDATED, {ids[4]: NOW + 50})  # a live write that raced the backfill

    done = store.backfill_indexes(batch=2)

    assert done == Backfill(ran=True, watches=5, added=4 + 5 * 2)
    assert by_label("a") == {ids[1], ids[3]}
    assert by_label("b") == {ids[0], ids[2], ids[4]}
    assert [w.id for w in store.list_watches(labels={"n": "3"})[0]] == [ids[3]]
    assert updated_between(NOW, NOW + 4) == ids[1:4]  # registered at NOW + 1..3, never updated
    assert updated_between(NOW + 20, NOW + 21) == [ids[0]]  # its commit's time
    assert store.redis.zscore(keys.UPDATED, ids[4]) == NOW + 50  # not set back
    assert store.redis.zscore(keys.label("team", "a"), ids[1]) == NOW + 1  # by created at

    store.redis.zrem(keys.UPDATED, ids[1])
    assert store.backfill_indexes(batch=2) == Backfill(ran=False)
    assert store.redis.zscore(keys.UPDATED, ids[1]) is None  # the second run did nothing


def test_backfill_of_an_empty_store_marks_it_done(store: Store) -> None:
    """A new deployment has nothing to backfill; the first start records that, the next ones
    only read the schema key."""
    assert store.backfill_indexes() == Backfill(ran=True, watches=0, added=0)
    assert store.redis.get(keys.SCHEMA) == str(SCHEMA_VERSION)
    store.register(reg("new"), NOW)
    assert store.backfill_indexes() == Backfill(ran=False)


def test_progress_track_is_kept_only_where_there_is_progress(store: Store) -> None:
    """A decision's progress track (when the value was first seen, its rate) reaches the watch
    and comes back with it for the next decision; a watch without progress carries none."""
    tracked, _ = store.register(reg("t-progress"), NOW)
    plain, _ = store.register(reg("t-plain"), NOW)
    claims = {c.watch_id: c for c in store.claim_due("geobox", NOW, 10, NOW + 60)}
    seen = replace(running(NOW, NOW + 9), progress_at=NOW, progress_rate=1 / 300)
    assert store.commit(Commit(claims[tracked.id], seen, NOW, previous=State.PENDING))
    blind = replace(running(NOW, NOW + 2), progress=None)
    assert store.commit(Commit(claims[plain.id], blind, NOW, previous=State.PENDING))
    after = store.get(tracked.id)
    assert after is not None
    assert (after.progress_at, after.progress_rate) == (NOW, 0.003333)  # four digits of rate
    assert (after.view().progress_at, after.view().progress_rate) == (NOW, 0.003333)
    fields = store.redis.hkeys(keys.watch(plain.id))
    assert "progress_at" not in fields and "progress_rate" not in fields


def test_rearm_forgets_the_progress_track(store: Store) -> None:
    """A re-armed watch measures its next run's rate afresh, not against the last run's track."""
    w, _ = store.register(reg("t-rearm-progress"), NOW)
    claim = store.claim_due("geobox", NOW, 10, NOW + 60)[0]
    failed = replace(running(NOW), state=State.ERROR, progress_at=NOW, progress_rate=0.01)
    assert store.commit(Commit(claim, failed, NOW, previous=State.PENDING))
    rearmed = store.rearm(w.id, NOW + 5)
    assert rearmed is not None and rearmed.state is State.PENDING
    assert (rearmed.progress_at, rearmed.progress_rate) == (None, None)
