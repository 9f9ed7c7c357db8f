"""Status checks per second, end to end, beside the ceiling of a plain async httpx loop.

    python bench/polls.py [--watches 20000] [--concurrency 100] [--workers 2]

Both sides hit the same simulator process (its own process, so it has its own interpreter) with
the same status GETs against tasks that stay PENDING (one request per check).

The ceiling is a plain async httpx loop at its best concurrency: httpx's pool costs grow with the
number of connections in flight (encode/httpx#3215), so the loop is swept over several
concurrencies and the best is kept. It is measured in one process, and in as many processes as
the warden has poll workers (the like-for-like figure the ratio uses), before and after the
warden run, so a drift in the machine shows.

The warden run: the watches are registered (all due at once) with the service stopped; then the
beat scheduler and a poll worker start; the rate is counted from the first committed check to
the last, so process start-up is not charged to polling.

``--latency S`` makes the simulator wait S seconds before every status answer, as a remote
platform would; ``--compare-pools`` runs the warden a second time with one plain httpx pool
(``TASKWARDEN_HTTP__CONNECTIONS_PER_POOL=100``) beside the default of many small pools;
``--compare-transport`` runs it again on Celery's stock Redis transport
(``TASKWARDEN_ATOMIC_FETCH=false``) beside taskwarden's atomic fetch.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from _simulator import start_simulator

from taskwarden.models import Registration
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer, free_port
from taskwarden.store.watches import Store

TOKEN = "sim-token"
FAR = 10**9  # far-future next check: each watch is checked exactly once in the run


def make_tasks(base: str, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    specs = [{"uuid": i, "pending_seconds": 10**7} for i in ids]
    for start in range(0, count, 5000):
        r = httpx.post(
            f"{base}/_control/geobox/tasks", json=specs[start : start + 5000], timeout=60
        )
        r.raise_for_status()
    return ids


async def loop(geobox: str, ids: list[str], concurrency: int) -> float:
    """Plain async httpx: the same GETs, as fast as one client can send them."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:

        async def one(task: str) -> None:
            async with gate:
                r = await client.get(f"{geobox}tasks/{task}/")
                r.raise_for_status()
                r.json()

        started = time.perf_counter()
        await asyncio.gather(*(one(t) for t in ids))
        return len(ids) / (time.perf_counter() - started)


def _loop_in_process(args: tuple[str, list[str], int]) -> float:
    return asyncio.run(loop(*args))


def ceiling(geobox: str, ids: list[str], processes: int, latency: float) -> tuple[float, int]:
    """The best total rate of ``processes`` plain loops over a sweep of concurrencies."""
    best, best_conc = 0.0, 0
    for conc in (1, 2, 4, 8, 16, 64, 256):
        # enough requests for a steady rate, few enough that slow settings finish in seconds
        per_process = 4000 if not latency else min(4000, conc * 40)
        sample = ids[: min(len(ids), per_process * processes)]
        share = [sample[i::processes] for i in range(processes)]
        with multiprocessing.Pool(processes) as pool:
            started = time.perf_counter()
            pool.map(_loop_in_process, [(geobox, part, conc) for part in share])
            rate = len(sample) / (time.perf_counter() - started)
        if rate > best:
            best, best_conc = rate, conc
    return best, best_conc


def warden(
    geobox: str, ids: list[str], workers: int, tmp: Path, per_pool: int, atomic_fetch: bool = True
) -> tuple[float, float]:
    """Register every watch due now, start the service, time first to last committed check."""
    with RedisServer(tmp / "redis", persist=False) as server:
        store = Store.from_url(server.url)
        now = time.time()
        for task in ids:
            store.register(Registration(provider="geobox", remote_id=task), now)
        env = {
            "TASKWARDEN_REDIS_URL": server.url,
            "TASKWARDEN_DATA_DIR": str(tmp / "data"),
            "TASKWARDEN_ARCHIVE_URL": (tmp / "archive").as_uri(),
            "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": geobox,
            "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": TOKEN,
            "TASKWARDEN_DISPATCH_INTERVAL": "0.2",
            "TASKWARDEN_POLL__INITIAL": str(FAR),
            "TASKWARDEN_POLL__MAXIMUM": str(FAR),
            "TASKWARDEN_LEASE_SECONDS": "600",
            "TASKWARDEN_LOG_FORMAT": "json",
            "TASKWARDEN_HTTP__MAX_CONNECTIONS": "100",
            "TASKWARDEN_HTTP__CONNECTIONS_PER_POOL": str(per_pool),
            "TASKWARDEN_ATOMIC_FETCH": str(atomic_fetch).lower(),
        }
        with Service(env, poll_concurrency=workers, log_dir=tmp / "logs"):
            first_seen = first_count = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = store.redis.zcount("taskwarden:due:geobox", now + FAR / 2, "+inf")
                if done and first_seen is None:
                    first_seen, first_count = time.perf_counter(), done
                if done >= len(ids):
                    break
                time.sleep(0.01)
            else:
                raise SystemExit("the warden did not check every watch within 600 s")
            elapsed = time.perf_counter() - first_seen
            assert first_count is not None
        errors = store.redis.zcard("taskwarden:state:error")
        store.redis.close()
    if errors:
        raise SystemExit(f"{errors} watches ended in error; see {tmp / 'logs'}")
    return (len(ids) - first_count) / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="poll processes")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per status answer")
    parser.add_argument("--compare-pools", action="store_true", help="also run one httpx pool")
    parser.add_argument(
        "--compare-transport",
        action="store_true",
        help="also run on Celery's stock Redis transport (TASKWARDEN_ATOMIC_FETCH=false)",
    )
    args = parser.parse_args()

    port = free_port()
    sim = start_simulator(port)
    base = f"http://127.0.0.1:{port}"
    geobox = f"{base}/geobox/v1/"
    runs: dict[str, tuple[float, float]] = {}
    try:
        ids = make_tasks(base, args.watches)
        if args.latency:
            fault = {"kind": "delay", "delay": args.latency, "count": None, "platform": "geobox"}
            httpx.post(f"{base}/_control/faults", json=fault, timeout=10).raise_for_status()
        one_before = ceiling(geobox, ids, 1, args.latency)
        many_before = ceiling(geobox, ids, args.workers, args.latency)
        variants = {"many small pools (default)": (2, True)}
        if args.compare_pools:
            variants["one httpx pool"] = (100, True)
        if args.compare_transport:
            variants["stock Redis transport"] = (2, False)
        for label, (per_pool, atomic) in variants.items():
            with tempfile.TemporaryDirectory(prefix="taskwarden-bench-") as tmp:
                runs[label] = warden(geobox, ids, args.workers, Path(tmp), per_pool, atomic)
        one_after = ceiling(geobox, ids, 1, args.latency)
        many_after = ceiling(geobox, ids, args.workers, args.latency)
    finally:
        sim.terminate()
        sim.wait()
    one = (one_before[0] + one_after[0]) / 2
    many = (many_before[0] + many_after[0]) / 2
    latency_ms = args.latency * 1000
    print(f"watches {args.watches}, latency {latency_ms:.0f} ms, {args.workers} poll processes")
    print(
        f"ceiling, httpx loop, 1 process   {one:8.0f} /s  (before {one_before[0]:.0f} at "
        f"concurrency {one_before[1]}, after {one_after[0]:.0f} at {one_after[1]})"
    )
    print(
        f"ceiling, httpx loop, {args.workers} processes {many:8.0f} /s  (before "
        f"{many_before[0]:.0f} at concurrency {many_before[1]}, after {many_after[0]:.0f} "
        f"at {many_after[1]})"
    )
    for label, (rate, elapsed) in runs.items():
        print(
            f"taskwarden, {label:<27} {rate:8.0f} /s  ({elapsed:.1f} s)  "
            f"= {rate / many:.0%} of the {args.workers}-process ceiling, {rate / one:.0%} of 1"
        )


if __name__ == "__main__":
    main()
