"""A million watches on one Redis: registration rate, memory per watch, and the read paths of
/v1/stats, /readyz and the dashboard's first load, at 10k watches and at N.

    python bench/million.py [--watches 1000000] [--sample 2000] [--workers 2]

A private redis-server (append-only, on a free loopback port) is filled with ``--watches``
geobox watches, one label each:

1. ``--sample`` through ``Store.register`` alone, one at a time (the anchor);
2. up to 10,000 through ``Store.register_many`` in this process (the pipelined store path);
3. the rest as ``taskwarden.track_many`` messages of 1,000 registrations, sent to the broker
   and run by a real worker (``taskwarden worker -Q celery -c --workers``): the queue message
   path, each registration validated, pipelined into the store a chunk per round trip. Timed
   from the first message sent to the last watch stored.
4. once the figures at N are taken, ``--sample`` more through ``Store.register`` and 10,000
   more through ``Store.register_many`` again, so that the in-process rates are also seen at
   the size the queue path reached.

At 10,000 watches and at N it prints Redis's used memory per watch (above the empty server),
and the median latency of ``GET /v1/stats``, ``GET /readyz`` (503 here: no beat runs; its
checks run all the same) and the dashboard's first load (its page and files, then the requests
its first refresh makes, one after the other), each beside its 10k figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from celery import Celery

from taskwarden import keys
from taskwarden.api import create_app
from taskwarden.config import load_settings
from taskwarden.models import Registration
from taskwarden.redis_server import RedisServer, free_port
from taskwarden.store.watches import Store

ANCHOR = 10_000
MESSAGE = 1_000  # registrations per track_many message
TOKEN = "bench-token"
FAILURES = ("failed", "error", "timed_out")  # the dashboard's failures panel (dashboard.js)
DASHBOARD = [
    "/",
    "/static/dashboard.js",
    "/static/dashboard.css",
    "/v1/stats",
    "/v1/watches?limit=50&sort=-created_at",
    *(f"/v1/watches?state={s}&sort=-updated_at&limit=10" for s in FAILURES),
]
REPEAT = 7  # requests per figure (the median is printed)


def registration(i: int) -> dict[str, object]:
    return {"provider": "geobox", "remote_id": f"task-{i:08d}", "labels": {"team": f"t{i % 10}"}}


def used_memory(store: Store) -> tuple[int, int]:
    info = store.redis.info("memory")
    return int(info["used_memory"]), int(info["used_memory_rss"])


@contextmanager
def serve_api(redis_url: str, data_dir: Path) -> Iterator[httpx.Client]:
    settings = load_settings(
        data_dir=data_dir, archive_url=(data_dir / "archive").as_uri(), api={"token": TOKEN}
    )
    (data_dir / "archive").mkdir(parents=True, exist_ok=True)
    port = free_port()
    app = create_app(settings, redis_url)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def latency(client: httpx.Client, paths: list[str]) -> tuple[float, list[int]]:
    """Median milliseconds to GET ``paths`` one after the other, and the last statuses."""
    times = []
    statuses: list[int] = []
    for attempt in range(REPEAT + 1):
        started = time.perf_counter()
        statuses = [client.get(path).status_code for path in paths]
        if attempt:  # the first warms the connection and the caches
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), statuses


def read_paths(client: httpx.Client) -> dict[str, tuple[float, list[int]]]:
    return {
        "GET /v1/stats": latency(client, ["/v1/stats"]),
        "GET /readyz": latency(client, ["/readyz"]),
        "dashboard first load": latency(client, DASHBOARD),
    }


def start_worker(env: dict[str, str], workers: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "taskwarden", "worker", "-Q", keys.QUEUE_DEFAULT,
            "-c", str(workers), "-n", f"bench-{os.getpid()}@%h"]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out)  # fmt: skip


def fill_by_queue(store: Store, url: str, start: int, end: int) -> float:
    """Send registrations ``start``..``end`` as track_many messages; seconds until stored."""
    producer = Celery(broker=url, set_as_current=False)
    began = time.perf_counter()
    with producer.connection_for_write() as conn:
        for first in range(start, end, MESSAGE):
            batch = [registration(i) for i in range(first, min(end, first + MESSAGE))]
            producer.send_task(keys.TASK_TRACK_MANY, args=[batch], connection=conn)
    while store.redis.zcard(keys.ALL) < end:
        time.sleep(0.05)
    return time.perf_counter() - began


def structure_bytes(store: Store, n: int, sample: int = 200) -> dict[str, float]:
    """Bytes a watch costs in each structure: its hash and history list (MEMORY USAGE of a
    sample), and its share of each index sorted set (the whole set's usage over N)."""
    ids = [m for m, _ in store.redis.zrange(keys.ALL, 0, sample - 1, withscores=True)]
    per: dict[str, float] = {}
    for name, key_of in (("watch hash", keys.watch), ("history list", keys.history)):
        sizes = [store.redis.memory_usage(key_of(wid), samples=0) or 0 for wid in ids]
        per[name] = sum(sizes) / len(sizes)
    indexes = {
        "watches (by created)": keys.ALL,
        "updated": keys.UPDATED,
        "state:pending": keys.by_state("pending"),
        "provider:geobox": keys.by_provider("geobox"),
        "due:geobox": keys.due("geobox"),
    }
    for name, key in indexes.items():
        per[name] = (store.redis.memory_usage(key, samples=0) or 0) / n
    labels = [keys.label("team", f"t{i}") for i in range(10)]
    per["label:team=tN (one each)"] = sum(store.redis.memory_usage(k, samples=0) or 0
                                         for k in labels) / n  # fmt: skip
    per["events stream (capped), per watch"] = (
        store.redis.memory_usage(keys.EVENTS, samples=0) or 0
    ) / n
    return per


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watches", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2_000, help="registered one at a time")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (track_many)")
    args = parser.parse_args()
    n = max(args.watches, ANCHOR)
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp) / "redis", persist=True) as server,
    ):
        store = Store.from_url(server.url)
        empty, empty_rss = used_memory(store)
        now = time.time()

        started = time.perf_counter()
        for i in range(args.sample):
            store.register(Registration.model_validate(registration(i)), now, None)
        alone = args.sample / (time.perf_counter() - started)

        started = time.perf_counter()
        regs = [Registration.model_validate(registration(i)) for i in range(args.sample, ANCHOR)]
        store.register_many(regs, now, None)
        pipelined = len(regs) / (time.perf_counter() - started)

        env = {
            "TASKWARDEN_REDIS_URL": server.url,
            "TASKWARDEN_DATA_DIR": str(Path(tmp) / "data"),
            "TASKWARDEN_ARCHIVE_URL": (Path(tmp) / "archive").as_uri(),
            "TASKWARDEN_LOG_FORMAT": "json",
            "TASKWARDEN_LOG_LEVEL": "warning",
        }
        worker = start_worker(env, args.workers, Path(tmp) / "worker.log")
        try:
            while not store.worker_heartbeats():
                time.sleep(0.1)
            figures = {}
            with serve_api(server.url, Path(tmp) / "api") as client:
                used, rss = used_memory(store)
                figures[ANCHOR] = (read_paths(client), (used - empty) / ANCHOR,
                                   (rss - empty_rss) / ANCHOR)  # fmt: skip
                seconds = fill_by_queue(store, server.url, ANCHOR, n)
                queued = (n - ANCHOR) / seconds
                used, rss = used_memory(store)
                figures[n] = (read_paths(client), (used - empty) / n, (rss - empty_rss) / n)
                structures = structure_bytes(store, n)
            started = time.perf_counter()
            for i in range(n, n + args.sample):
                store.register(Registration.model_validate(registration(i)), now, None)
            alone_at_n = args.sample / (time.perf_counter() - started)
            more = [Registration.model_validate(registration(i))
                    for i in range(n + args.sample, n + args.sample + ANCHOR)]  # fmt: skip
            started = time.perf_counter()
            store.register_many(more, now, None)
            pipelined_at_n = len(more) / (time.perf_counter() - started)
        finally:
            worker.terminate()
            worker.wait(30)
        store.close()

    print(
        f"{n:,} geobox watches (one label each) in one append-only Redis; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    print(f"{'registration':<60} {'per s':>9} {'vs Store.register':>18}")
    for name, rate in (
        ("Store.register alone, one at a time, up to 2k", alone),
        ("Store.register_many (pipelined, in process), to 10k", pipelined),
        (f"track_many messages, {args.workers} worker processes, 10k to {n:,}", queued),
        (f"Store.register alone, at {n:,}", alone_at_n),
        (f"Store.register_many (pipelined, in process), at {n:,}", pipelined_at_n),
    ):
        print(f"{name:<60} {rate:>9,.0f} {rate / alone:>17.1f}x")
    print(f"{'read path (median of ' + str(REPEAT) + ')':<28} {'at 10k':>10} {'at ' + f'{n:,}':>14}"
          f" {'ratio':>7}  statuses")  # fmt: skip
    low, high = figures[ANCHOR][0], figures[n][0]
    for name in low:
        (a, _), (b, statuses) = low[name], high[name]
        print(f"{name:<28} {a:>7.1f} ms {b:>11.1f} ms {b / a:>6.2f}x  {statuses}")
    for size in (ANCHOR, n):
        _, per, per_rss = figures[size]
        print(f"Redis memory at {size:,}: {per:,.0f} B a watch used, {per_rss:,.0f} B RSS")
    print(f"bytes a watch costs, by structure, at {n:,}:")
    for name, size in structures.items():
        print(f"  {name:<36} {size:>7,.0f} B")
    print(f"  {'sum':<36} {sum(structures.values()):>7,.0f} B")


if __name__ == "__main__":
    main()
