"""The store's reading side on a real Redis: filtered, sorted, cursor-paged listing; re-arming;
the transition events stream; dispatch lag and counts by provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from taskwarden.lifecycle import Decision, State
from taskwarden.models import Registration, Watch
from taskwarden.store import queries as store_queries
from taskwarden.store import scripts as store_scripts
from taskwarden.store.queries import BadQuery
from taskwarden.store.watches import Commit, NotRearmable, Store

NOW = 1_700_000_000.0


def reg(remote_id: str, provider: str = "geobox", **kw: Any) -> Registration:
    return Registration.model_validate({"provider": provider, "remote_id": remote_id, **kw})


def move(store: Store, wid: str, state: State, now: float, **kw: Any) -> bool:
    """Claim ``wid`` (making it due first) and commit ``state`` for it."""
    provider = store.get(wid).provider  # type: ignore[union-attr]
    store.redis.zadd(f"taskwarden:due:{provider}", {wid: 0})
    claims = [c for c in store.claim_due(provider, now, 10_000, now + 60) if c.watch_id == wid]
    final = state.final
    decision = Decision(state, kw.pop("raw", state.upper()), kw.pop("progress", None), 1.0,
                        kw.pop("errors", 0), None if final else now + 1000, note=f"to {state}",
                        **kw)  # fmt: skip
    return store.commit(Commit(claims[0], decision, now))


def all_pages(store: Store, limit: int, **filters: Any) -> Iterator[list[Watch]]:
    cursor = None
    while True:
        page, cursor = store.list_watches(limit=limit, cursor=cursor, **filters)
        yield page
        if cursor is None:
            return


def ids(watches: list[Watch]) -> list[str]:
    return [w.remote_id for w in watches]


@pytest.fixture
def population(store: Store) -> list[Watch]:
    """60 watches over two providers, three label values and a few states, some created at the
    same instant (ties), each updated at a different time than it was created."""
    watches = []
    for i in range(60):
        labels = {"team": ["a", "b", "c"][i % 3], "k=x": "v"}
        provider = "geobox" if i % 4 else "up42"
        created = NOW + (i // 2)  # pairs share a created_at
        w, _ = store.register(reg(f"task-{i:02d}", provider, labels=labels), created)
        watches.append(w)
    for i in range(0, 60, 5):
        move(store, watches[i].id, State.RUNNING, NOW + 1000 - i)
    for i in range(1, 60, 7):
        move(store, watches[i].id, State.SUCCEEDED, NOW + 2000 + i)
    return [store.get(w.id) for w in watches]  # type: ignore[misc]


CASES: list[dict[str, Any]] = [
    {},
    {"sort": "created_at"},
    {"sort": "updated_at"},
    {"sort": "-updated_at"},
    {"state": "running"},
    {"state": "pending", "provider": "geobox"},
    {"provider": "up42", "sort": "created_at"},
    {"labels": {"team": "b"}},
    {"labels": {"team": "b", "k=x": "v"}, "state": "pending"},
    {"q": "TASK-1"},
    {"created_after": NOW + 5, "created_before": NOW + 20},
    {"updated_after": NOW + 1000 - 30, "sort": "updated_at"},
    {"updated_before": NOW + 2000, "provider": "geobox", "sort": "-updated_at"},
    {"updated_after": NOW + 1000 - 30, "updated_before": NOW + 1000 - 10},
    {"q": "task-1", "updated_after": NOW + 1000 - 40, "sort": "created_at"},
    {"q": "K-4", "created_before": NOW + 25, "labels": {"team": "a"}, "sort": "-updated_at"},
]


def expected(population: list[Watch], f: dict[str, Any]) -> list[str]:
    def keep(w: Watch) -> bool:
        return (
            (f.get("state") is None or w.state == f["state"])
            and (f.get("provider") is None or w.provider == f["provider"])
            and all(w.labels.get(k) == v for k, v in f.get("labels", {}).items())
            and (f.get("q") is None or f["q"].lower() in (w.id + w.remote_id).lower())
            and w.created_at >= f.get("created_after", 0)
            and w.created_at < f.get("created_before", float("inf"))
            and w.updated_at >= f.get("updated_after", 0)
            and w.updated_at < f.get("updated_before", float("inf"))
        )

    sort = f.get("sort", "-created_at")
    key = sort.lstrip("-")
    rows = sorted((getattr(w, key), w.id) for w in population if keep(w))
    if sort.startswith("-"):
        rows.reverse()
    by_id = {w.id: w.remote_id for w in population}
    return [by_id[wid] for _, wid in rows]


@pytest.mark.parametrize("small_set", [store_queries.SMALL_SET, 0], ids=["in-memory", "walk"])
@pytest.mark.parametrize("filters", CASES, ids=[str(c) for c in CASES])
def test_pages_cover_exactly_the_matching_watches_in_order(
    store: Store,
    population: list[Watch],
    filters: dict[str, Any],
    small_set: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Following cursors yields every matching watch once, in the asked order, by either plan
    (a small filter set ordered in memory, or an index walked in order)."""
    monkeypatch.setattr(store_queries, "SMALL_SET", small_set)
    want = expected(population, filters)
    for limit in (1, 7, 500):
        pages = list(all_pages(store, limit, **filters))
        assert all(len(p) <= limit for p in pages)
        assert [i for p in pages for i in ids(p)] == want


def test_pages_are_stable_while_watches_arrive(store: Store) -> None:
    """Watches registered between two pages neither repeat nor hide the ones already listed."""
    for i in range(30):
        store.register(reg(f"old-{i:02d}"), NOW + i)
    seen: list[str] = []
    cursor = None
    n = 0
    while True:
        page, cursor = store.list_watches(limit=4, cursor=cursor)
        seen += ids(page)
        store.register(reg(f"new-{n}"), NOW + 100 + n)  # newest first: before the cursor
        n += 1
        if cursor is None:
            break
    assert seen == [f"old-{i:02d}" for i in reversed(range(30))]


def test_updated_sort_follows_a_watch_that_moves(store: Store) -> None:
    """A watch updated after a page was read moves to the front of -updated_at; the cursor
    still continues where it was (resuming by score when its own watch moved)."""
    ws = [store.register(reg(f"t{i}"), NOW + i)[0] for i in range(10)]
    page, cursor = store.list_watches(sort="-updated_at", limit=3)
    assert ids(page) == ["t9", "t8", "t7"]
    move(store, ws[7].id, State.RUNNING, NOW + 50)  # the cursor's own watch moves away
    rest, cursor = store.list_watches(sort="-updated_at", limit=100, cursor=cursor)
    assert ids(rest) == ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]
    assert cursor is None
    assert ids(store.list_watches(sort="-updated_at", limit=1)[0]) == ["t7"]


def test_a_sparse_filter_returns_short_pages_not_an_endless_scan(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a scan budget, a filter no index answers gives short pages with a cursor; following
    them still finds every match."""
    monkeypatch.setattr(store_queries, "SCAN_BUDGET", 10)
    for i in range(50):
        store.register(reg(f"t{i:02d}"), NOW + i)
    pages = list(all_pages(store, 5, q="t0"))
    assert len(pages) > 2
    assert [i for p in pages for i in ids(p)] == [f"t0{i}" for i in reversed(range(10))]


# remote id, name: ASCII in any case, and texts whose casefold differs from their lower case
TEXTS = [
    ("Remote-ABC", None),
    ("plain-1", "MiXeD Case Job"),
    ("plain-2", "Straße 12"),
    ("plain-3", "STRASSE 12"),
    ("plain-4", "Kelvin 5\u212a"),  # the Kelvin sign: casefold gives 'k'
    ("plain-5", "\u017ftate"),  # long s: casefold gives 's'
    ("plain-6", "Ünïcode Ärger"),
    ("ÉTÉ-7", "summer"),
    ("plain-8", "ordinary"),
    ("plain-9", "ǅ digraph"),  # titlecase: casefold gives 'ǆ'
]
NEEDLES = ["strasse", "STRASSE", "ß", "SS", "straße", "k", "\u212a", "5K", "\u017f", "S", "state",
           "mixed case", "MIXED", "ünï", "ÜNÏCODE", "été", "ÉTÉ-7", "remote-abc", "REMOTE",
           "ǆ", "Ǆ", "ǅ", "plain", "geobox", "nothing", "e", " "]  # fmt: skip


def casefold_search(watches: list[Watch], q: str) -> set[str]:
    """What the text search means: a casefold substring of the id, remote id or name."""
    needle = q.casefold()
    return {w.remote_id for w in watches
            if any(needle in (t or "").casefold() for t in (w.id, w.remote_id, w.name))}  # fmt: skip


@pytest.fixture
def named(store: Store) -> list[Watch]:
    """The TEXTS as watches, each named by its (simulated) provider in a commit at a fractional
    time, so the other-key time range is checked at float precision."""
    for i, (remote_id, _) in enumerate(TEXTS):
        store.register(reg(remote_id, "geobox" if i % 2 else "up42"), NOW + i / 10)
    for provider in ("geobox", "up42"):
        claims = store.claim_due(provider, NOW + 10, 100, NOW + 100)
        for claim in claims:
            w = store.get(claim.watch_id)
            assert w is not None
            i = [r for r, _ in TEXTS].index(w.remote_id)
            name = TEXTS[i][1]
            d = Decision(State.RUNNING, "RUN", None, 1.0, 0, NOW + 1000)
            extra = {"name": name} if name else None
            assert store.commit(Commit(claim, d, NOW + 20 + i / 10, extra=extra))
    return [w for w in (store.get(wid) for wid in store.redis.zrange("taskwarden:watches", 0, -1))
            if w is not None]  # fmt: skip


@pytest.mark.parametrize("small_set", [store_queries.SMALL_SET, 0], ids=["in-memory", "walk"])
@pytest.mark.parametrize("q", NEEDLES)
def test_search_finds_what_casefold_finds(
    store: Store, named: list[Watch], q: str, small_set: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text search keeps exactly Python's casefold substring match on id, remote id and
    name ('ß' = 'SS', the Kelvin sign = 'k', non-ASCII needles), through cursors, combined with
    a provider filter and with the other key's time range (bounds at float precision)."""
    monkeypatch.setattr(store_queries, "SMALL_SET", small_set)
    assert {w.name for w in named} >= {"Straße 12", "Kelvin 5\u212a"}
    want = casefold_search(named, q)
    got = [i for p in all_pages(store, 2, q=q) for i in ids(p)]
    assert sorted(got) == sorted(want) and len(got) == len(set(got))
    geobox = [w for w in named if w.provider == "geobox"]
    got = [i for p in all_pages(store, 2, q=q, provider="geobox") for i in ids(p)]
    assert set(got) == casefold_search(geobox, q)
    cut = named[4].updated_at  # fractional: NOW + 20.4
    later = [w for w in named if w.updated_at >= cut]
    assert 0 < len(later) < len(named)
    got = [i for p in all_pages(store, 3, q=q, updated_after=cut) for i in ids(p)]
    assert set(got) == casefold_search(later, q)
    got = [i for p in all_pages(store, 3, q=q, updated_before=cut, sort="created_at")
           for i in ids(p)]  # fmt: skip
    assert set(got) == casefold_search([w for w in named if w.updated_at < cut], q)


def test_search_by_id_finds_the_watch(store: Store, named: list[Watch]) -> None:
    """A watch's own id (any part of it, in any case) finds it."""
    w = named[3]
    assert ids(store.list_watches(q=w.id[1:9].upper())[0]) == [w.remote_id]


def test_the_script_rules_out_what_it_can_decide(store: Store, named: list[Watch]) -> None:
    """The light-filter script alone drops gone watches, the ones outside the other-key range
    and ASCII-only ones that do not match; it keeps every match and every watch with non-ASCII
    text, for Python's casefold to decide (so the search reads few whole watches)."""
    script = store.redis.register_script(store_scripts.LIGHT_FILTER)
    chunk = [(w.id, w.created_at) for w in named] + [("wgone", NOW)]
    non_ascii = {w.remote_id for w in named if not all(t.isascii() for t in
                                                     (w.id, w.remote_id, w.name or ""))}  # fmt: skip
    by_id = {w.id: w.remote_id for w in named}

    def kept(q: str | None, **bounds: float) -> set[str]:
        query = store_queries.Query(q=q, **bounds)
        return {by_id[m] for m, _ in store_queries._light_filter(script, query, chunk)}

    assert kept(None) == set(by_id.values())  # "wgone" dropped
    assert kept("plain") == {r for r, _ in TEXTS if r.startswith("plain")} | non_ascii
    assert kept("strasse") == {"plain-3"} | non_ascii
    assert kept("nothing") == non_ascii
    assert kept("ünï") == non_ascii  # a non-ASCII needle is in no ASCII text
    cut = named[4].updated_at
    assert kept(None, updated_after=cut) == {w.remote_id for w in named if w.updated_at >= cut}
    assert kept(None, updated_before=cut) == {w.remote_id for w in named if w.updated_at < cut}
    assert kept("ordinary", updated_before=cut) == ({"plain-8"} | non_ascii) & {
        w.remote_id for w in named if w.updated_at < cut
    }


def test_a_search_reads_whole_only_the_watches_that_may_match(store: Store) -> None:
    """Over many ASCII watches, a search reads in full only its match (and the one watch whose
    non-ASCII name only casefold can judge); the rest are ruled out by the script."""
    for i in range(300):
        store.register(reg(f"job-{i:03d}"), NOW + i)
    claim = store.claim_due("geobox", NOW + 1000, 1000, NOW + 2000)[0]
    d = Decision(State.RUNNING, "RUN", None, 1.0, 0, NOW + 3000)
    assert store.commit(Commit(claim, d, NOW + 1000, extra={"name": "Maße"}))
    store.redis.config_resetstat()
    page, cursor = store.list_watches(q="JOB-123", limit=10)
    assert (ids(page), cursor) == (["job-123"], None)
    stats = store.redis.info("commandstats")
    assert stats["cmdstat_hgetall"]["calls"] <= 2


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"sort": "name"}, "sort must be one of"),
        ({"state": "done"}, "unknown state 'done'"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"cursor": "not-a-cursor"}, "cursor is not one this server returned"),
    ],
)
def test_bad_queries_say_why(store: Store, kwargs: dict[str, Any], reason: str) -> None:
    """Each unanswerable request is refused with its reason."""
    with pytest.raises(BadQuery, match=reason):
        store.list_watches(**kwargs)


def test_a_cursor_only_fits_its_own_query(store: Store) -> None:
    """A cursor replayed with other filters or another sort is refused, not misread."""
    for i in range(3):
        store.register(reg(f"t{i}"), NOW + i)
    _, cursor = store.list_watches(limit=1)
    assert cursor is not None
    with pytest.raises(BadQuery, match="other filters or another sort"):
        store.list_watches(limit=1, cursor=cursor, sort="created_at")
    with pytest.raises(BadQuery, match="other filters"):
        store.list_watches(limit=1, cursor=cursor, state="pending")


def test_rearm_puts_an_error_watch_back_on_the_schedule(store: Store) -> None:
    """Re-arming an error watch makes it pending and due now, resets errors, renews the
    deadline, and fences off any job still holding the old claim."""
    w, _ = store.register(reg("t1", timeout=60), NOW)
    claim = store.claim_due("geobox", NOW, 10, NOW + 60)[0]
    gone = Decision(State.ERROR, None, None, None, 5, None, note="gave up", last_error="boom")
    assert store.commit(Commit(claim, gone, NOW + 10))
    again = store.rearm(w.id, NOW + 100)
    assert again is not None
    assert (again.state, again.errors, again.last_error) == (State.PENDING, 0, None)
    assert (again.deadline, again.next_poll_at, again.finished_at) == (NOW + 160, NOW + 100, None)
    assert again.fence > claim.fence
    assert store.commit(Commit(claim, gone, NOW + 101)) is False
    assert store.redis.zscore("taskwarden:due:geobox", w.id) == NOW + 100
    assert store.history(w.id)[-1] == {
        "at": NOW + 100, "from": "error", "to": "pending", "raw": None,
        "note": "re-armed (was error: boom)",
    }  # fmt: skip
    assert store.counts_by_provider()["geobox"]["pending"] == 1
    assert store.list_watches(state="pending")[0] == [again]
    new_claim = store.claim_due("geobox", NOW + 100, 10, NOW + 160)
    assert [c.watch_id for c in new_claim] == [w.id]


@pytest.mark.parametrize("state", [State.PENDING, State.RUNNING, State.SUCCEEDED])
def test_rearm_refuses_other_states(store: Store, state: State) -> None:
    """Only error and timed_out watches can be re-armed; the refusal names the state."""
    w, _ = store.register(reg("t1"), NOW)
    if state is not State.PENDING:
        move(store, w.id, state, NOW + 1)
    with pytest.raises(NotRearmable, match=f"is {state}") as info:
        store.rearm(w.id, NOW + 2)
    assert info.value.state == state
    assert store.get(w.id).state is state  # type: ignore[union-attr]


def test_rearm_of_a_missing_watch_is_none(store: Store) -> None:
    """Re-arming an unknown id says so (None) and creates nothing."""
    assert store.rearm("wnothere", NOW) is None
    assert store.get("wnothere") is None


def test_every_transition_is_one_event(store: Store) -> None:
    """Register, a commit that changes state, a timeout, a re-arm and a cancel each append one
    event; a commit that changes nothing appends none."""
    w, _ = store.register(reg("t1"), NOW)
    store.register(reg("t1"), NOW + 1)  # idempotent repeat: no event
    move(store, w.id, State.RUNNING, NOW + 2, raw="RUN", progress=0.25)
    move(store, w.id, State.RUNNING, NOW + 3, raw="RUN", progress=0.5)  # no state change
    move(store, w.id, State.TIMED_OUT, NOW + 4)
    store.rearm(w.id, NOW + 5)
    assert store.cancel(w.id, NOW + 6)
    assert store.cancel(w.id, NOW + 7) is False  # already ended: no event
    events = store.events()
    assert [(e["from"], e["to"]) for _, e in events] == [
        ("", "pending"), ("pending", "running"), ("running", "timed_out"),
        ("timed_out", "pending"), ("pending", "cancelled"),
    ]  # fmt: skip
    first = events[1][1]
    assert first == {
        "watch_id": w.id, "provider": "geobox", "remote_id": "t1", "from": "pending",
        "to": "running", "raw": "RUN", "progress": "0.25", "note": "to running",
        "at": repr(NOW + 2),
    }  # fmt: skip
    assert events[4][1]["note"] == "cancelled by user"
    after = store.events(after=events[2][0])
    assert [e for e, _ in after] == [e for e, _ in events[3:]]
    assert store.events(after=events[-1][0], block_ms=50) == []


def test_dispatch_lag_is_the_oldest_due_wait(store: Store) -> None:
    """Lag is how long the longest-waiting due watch has waited, across providers; 0 if none."""
    assert store.dispatch_lag(NOW) == 0.0
    store.register(reg("a"), NOW + 10)
    store.register(reg("b", "up42"), NOW + 4)
    assert store.dispatch_lag(NOW + 14) == 10.0
    assert store.dispatch_lag(NOW) == 0.0  # not due yet
    store.claim_due("up42", NOW + 14, 10, NOW + 100)
    assert store.dispatch_lag(NOW + 14) == 4.0


def test_counts_by_provider_follow_every_transition(store: Store) -> None:
    """Counts per provider and state track registers, state changes, cancels and re-arms."""
    a, _ = store.register(reg("a"), NOW)
    b, _ = store.register(reg("b"), NOW)
    store.register(reg("c", "up42"), NOW)
    move(store, a.id, State.RUNNING, NOW + 1)
    move(store, a.id, State.ERROR, NOW + 2)
    store.cancel(b.id, NOW + 3)
    store.rearm(a.id, NOW + 4)
    counts = store.counts_by_provider()
    assert {s: n for s, n in counts["geobox"].items() if n} == {"pending": 1, "cancelled": 1}
    assert {s: n for s, n in counts["up42"].items() if n} == {"pending": 1}
    assert set(counts["geobox"]) == {str(s) for s in State}


def test_worker_heartbeats_are_read_back(store: Store) -> None:
    """Each worker node's heartbeat is listed by node name."""
    store.worker_heartbeat("poll-1@host", NOW, ttl=30)
    store.worker_heartbeat("archive-1@host", NOW + 1, ttl=30)
    assert store.worker_heartbeats() == {"archive-1@host": NOW + 1, "poll-1@host": NOW}
