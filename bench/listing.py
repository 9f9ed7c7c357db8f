"""How fast a page of watches is found among many: the queries the API and the dashboard make.

    python bench/listing.py [--watches 100000]

Registers ``--watches`` watches (two providers, a label with ten values, a few hundred running,
some failed) in a private Redis, then times each query for the first page and for a page deep
(following cursors through 21 pages), and prints milliseconds per page.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from taskwarden.lifecycle import Decision, State
from taskwarden.models import Registration
from taskwarden.redis_server import RedisServer
from taskwarden.store import Commit, Store

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
    {"q": "task-0999"},
    {"created_after": NOW + 50_000, "created_before": NOW + 50_500},
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


def timed(store: Store, query: dict[str, Any], pages: int) -> tuple[float, int]:
    cursor = None
    started = time.perf_counter()
    found = 0
    for _ in range(pages):
        items, cursor = store.list_watches(cursor=cursor, **{"limit": 50, **query})
        found += len(items)
        if cursor is None:
            break
    return (time.perf_counter() - started) * 1000 / pages, found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watches", type=int, default=100_000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp), persist=False) as server,
    ):
        store = Store.from_url(server.url)
        started = time.perf_counter()
        populate(store, args.watches)
        print(f"{args.watches} watches registered in {time.perf_counter() - started:.1f} s")
        print(f"{'query':<60} {'first page':>11} {'21 pages, per page':>19}")
        for query in QUERIES:
            first, _ = timed(store, query, 1)
            deep, _ = timed(store, query, 21)
            print(f"{query!s:<60} {first:>8.1f} ms {deep:>16.1f} ms")
        store.redis.close()


if __name__ == "__main__":
    main()
