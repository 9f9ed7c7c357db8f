"""How fast a page of watches is found among many: the queries the API and the dashboard make.

    python bench/listing.py [--watches 100000] [--search-filter script|python|both]
                            [--budget 20000] [--chunk 500]

Registers ``--watches`` watches (two providers, a label with ten values, a few hundred running,
some failed, a name on each as a provider would report it, one in a thousand with 'Straße' in
it) in a private Redis, then times each query for the first page and for the pages that follow
(following cursors through up to 21 pages), and prints milliseconds per page read, and the
longest single command Redis ran for the query (from its slow log: what one call holds the
single-threaded server for).

The text search and the other-key time range are checked by the light-filter script
(``script``). ``--search-filter python`` (or ``both``, side by side in the same run) times the
queries that use it with the Python filter the script replaced: an HMGET per candidate in a
pipeline, matched here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskwarden import keys
from taskwarden.lifecycle import Decision, State
from taskwarden.models import Registration
from taskwarden.redis_server import RedisServer
from taskwarden.store import queries as store_queries
from taskwarden.store.queries import Query
from taskwarden.store.watches import Commit, Store

NOW = 1_700_000_000.0

QUERIES: list[dict[str, Any]] = [
    {},
    {"sort": "-updated_at"},
    {"state": "running"},
    {"state": "failed", "sort": "-updated_at", "limit": 10},
    {"provider": "up42"},
    {"labels": {"team": "t3"}},
    {"state": "pending", "provider": "geobox"},
    {"labels": {"team": "t3"}, "state": "pending"},
    {"created_after": NOW + 50_000, "created_before": NOW + 50_500},
]

# each scans what it must: no match at all (the whole scan budget per page), a few, many, a
# needle only casefold finds, one that is not ASCII, and the other-key time range
SEARCHES: list[dict[str, Any]] = [
    {"q": "task-0999"},
    {"q": "TASK-00123"},
    {"q": "job"},
    {"q": "STRASSE"},
    {"q": "ße"},
    {"q": "nothing", "state": "pending", "provider": "geobox"},
    {"updated_after": NOW + 10**7},
]


def populate(store: Store, n: int) -> None:
    pipe_size = 1000
    for start in range(0, n, pipe_size):
        for i in range(start, min(n, start + pipe_size)):
            provider = "up42" if i % 5 == 0 else "geobox"
            reg = Registration(
                provider=provider, remote_id=f"task-{i:07d}", labels={"team": f"t{i % 10}"}
            )
            store.register(reg, NOW + i)
    for provider in ("geobox", "up42"):
        claims = store.claim_due(provider, NOW + n, 100_000, NOW + n + 3600)
        commits = []
        for k, claim in enumerate(claims[:600]):
            state = State.RUNNING if k % 3 else State.FAILED
            d = Decision(state, state.upper(), 0.5, 5.0, 0, None if state.final else NOW + 2 * n)
            commits.append(Commit(claim, d, NOW + n + k, previous=State.PENDING))
        store.commit_many(commits)
    ids = [m for m, _ in store.redis.zscan_iter(keys.ALL)]
    pipe = store.redis.pipeline(transaction=False)
    for k, wid in enumerate(ids):
        pipe.hset(keys.watch(wid), "name", f"Straße {k}" if k % 1000 == 7 else f"Job {k}")
    pipe.execute()


def timed(store: Store, query: dict[str, Any], pages: int) -> tuple[float, int, int]:
    """Milliseconds per page read, pages read, watches found."""
    cursor = None
    started = time.perf_counter()
    found = 0
    read = 0
    for _ in range(pages):
        items, cursor = store.list_watches(cursor=cursor, **{"limit": 50, **query})
        found += len(items)
        read += 1
        if cursor is None:
            break
    return (time.perf_counter() - started) * 1000 / read, read, found


def python_light_filter(
    script: Any, query: Query, chunk: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    """The filter the light-filter script replaced, as it was: HMGET per candidate, casefold."""
    client = script.registered_client
    pipe = client.pipeline(transaction=False)
    for member, _ in chunk:
        pipe.hmget(keys.watch(member), ("remote_id", "name", "created_at", "updated_at"))
    low, high = query.range_of(store_queries._other(query.key))
    needle = query.q.casefold() if query.q else None
    kept = []
    for item, (remote_id, name, created, updated) in zip(chunk, pipe.execute(), strict=True):
        if remote_id is None:
            continue
        value = float(updated if query.key == "created_at" else created)
        if (low is not None and value < low) or (high is not None and value >= high):
            continue
        if needle and not any(needle in (t or "").casefold() for t in (item[0], remote_id, name)):
            continue
        kept.append(item)
    return kept


@contextmanager
def search_filter(kind: str) -> Iterator[None]:
    """Listing with the script (as shipped) or with the Python filter it replaced."""
    saved = store_queries._light_filter
    if kind == "python":
        store_queries._light_filter = python_light_filter
    try:
        yield
    finally:
        store_queries._light_filter = saved


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watches", type=int, default=100_000)
    parser.add_argument("--search-filter", choices=("script", "python", "both"), default="both")
    parser.add_argument("--budget", type=int, default=store_queries.SCAN_BUDGET,
                        help="ids examined per page at most (the store's SCAN_BUDGET)")  # fmt: skip
    parser.add_argument("--chunk", type=int, default=store_queries.CHUNK,
                        help="ids read, or filtered, per round trip (CHUNK)")  # fmt: skip
    args = parser.parse_args()
    store_queries.SCAN_BUDGET = args.budget
    store_queries.CHUNK = args.chunk
    kinds = ("python", "script") if args.search_filter == "both" else (args.search_filter,)
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp), persist=False) as server,
    ):
        store = Store.from_url(server.url)
        started = time.perf_counter()
        populate(store, args.watches)
        print(f"{args.watches} watches registered in {time.perf_counter() - started:.1f} s; "
              f"scan budget {args.budget}, chunk {args.chunk}")  # fmt: skip
        store.redis.config_set("slowlog-log-slower-than", 1000)  # µs: only the long calls
        store.redis.config_set("slowlog-max-len", 10_000)
        head = (f"{'query':<62} {'filter':>6} {'first page':>11} {'next pages, per page':>24}"
                f"{'':>23} {'longest call':>12}")  # fmt: skip
        print(head)
        rows = [(q, ("",)) for q in QUERIES] + [(q, kinds) for q in SEARCHES]
        for query, filters in rows:
            for kind in filters:
                store.redis.slowlog_reset()
                with search_filter(kind or "script"):
                    first, _, _ = timed(store, query, 1)
                    deep, read, found = timed(store, query, 21)
                longest = max((e["duration"] for e in store.redis.slowlog_get(10_000)), default=0)
                print(f"{query!s:<62} {kind:>6} {first:>8.1f} ms {deep:>9.1f} ms "
                      f"({read:>2} pages, {found:>4} found) {longest / 1000:>9.1f} ms")  # fmt: skip
        store.redis.close()


if __name__ == "__main__":
    main()
