"""What a ``/metrics`` scrape costs as the watches grow, beside a scrape of one watch.

    python bench/scrape.py [--watches 100000]

A private Redis is filled with running watches of three providers (their hashes and the
indexes a scrape reads: ``state:running``, ``failing:<provider>``, ``counts:<provider>``),
written directly for speed; a fourth provider's only running watch is the youngest, so finding
each provider's oldest running watch reads the most ``state:running`` allows. A scrape is
:func:`taskwarden.metrics.exposition` of what the store reads (``Store.metric_cells`` and
``Store.live_figures``), as ``GET /metrics`` serves it, less HTTP.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from taskwarden import keys, metrics
from taskwarden.models import Registration
from taskwarden.redis_server import RedisServer
from taskwarden.store import Store

PROVIDERS = ("geobox", "up42", "isahit")


def scrape_ms(store: Store, rounds: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        metrics.exposition(store.metric_cells(), store.live_figures(time.time()))
    return (time.perf_counter() - started) / rounds * 1000


def fill(store: Store, watches: int, now: float) -> None:
    pipe = store.redis.pipeline(transaction=False)
    for i in range(watches):
        provider = PROVIDERS[i % len(PROVIDERS)]
        wid = f"w{i:09d}"
        pipe.hset(keys.watch(wid), mapping={"id": wid, "provider": provider, "state": "running"})
        pipe.zadd(keys.by_state("running"), {wid: now - watches + i})
        if i % 10 == 0:
            pipe.zadd(keys.failing(provider), {wid: now})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.hset(keys.watch("wlate"), mapping={"id": "wlate", "provider": "late", "state": "running"})
    pipe.zadd(keys.by_state("running"), {"wlate": now})
    pipe.execute()
    for provider in PROVIDERS:
        store.redis.sadd(keys.PROVIDERS, provider)
        store.redis.hset(keys.counts(provider), "running", watches // len(PROVIDERS))
    store.redis.sadd(keys.PROVIDERS, "late")
    store.redis.hset(keys.counts("late"), "running", 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), persist=False) as server:
        store = Store.from_url(server.url)
        store.register(Registration(provider="geobox", remote_id="one"), time.time())
        anchor = scrape_ms(store)
        store.redis.flushall()
        fill(store, args.watches, time.time())
        big = scrape_ms(store)
        store.close()
    print(f"scrape of 1 watch:                {anchor:7.2f} ms  (anchor)")
    print(f"scrape of {args.watches:,} running watches: {big:7.2f} ms  ({big / anchor:.2f}x)")


if __name__ == "__main__":
    main()
