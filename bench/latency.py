"""Detection delay and requests per task: taskwarden beside fixed-interval SDK-style loops.

    python bench/latency.py [--tasks 50] [--speed 5] [--seed 12]

The same scripted Geobox tasks (pending 2 s, then PROGRESS rising linearly to 100% over 30 to
240 s, then SUCCESS) are added three times at once to one simulator, one copy per poller:

- taskwarden: a real warden (beat, poll and archive workers through ``taskwarden.processes``, on
  its own Redis) with the default poll policy (2 s, x1.5, 60 s) and dispatch tick (1 s);
- an SDK-style loop, one coroutine per task: GET the task, sleep ``interval``, until it ends,
  with ``interval=1`` and with ``interval=60``.

Detection delay is the time from a task's scripted end to the moment its poller knew (the
warden's: the watch's ``finished_at``); requests per task are what the simulator counted for
that task. The simulator's clock runs ``--speed`` times faster than the wall clock, so a
240 s task takes 48 s at the default 5; every time taskwarden and the loops use (poll policy,
dispatch tick, sleeps) is divided by the same factor, and every figure printed is in simulated
seconds. What does not scale (a Celery message's trip, a Redis round trip, process scheduling on
a loaded machine) is charged ``speed`` times over, so the warden's delays are an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _simulator import start_simulator

from taskwarden.models import Registration, watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer, free_port
from taskwarden.store.watches import Store

TOKEN = "sim-token"
PENDING = 2.0
FINAL = ("SUCCESS", "FAILURE", "REVOKED")


@dataclass
class Clock:
    """The simulator's clock as seen from here: sim time ``sim0`` at wall time ``wall0``."""

    wall0: float
    sim0: float
    speed: float

    def sim(self, wall: float) -> float:
        return self.sim0 + (wall - self.wall0) * self.speed


@dataclass
class Run:
    """One poller's figures: delays (simulated seconds) and requests, per task."""

    delays: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)


def set_speed(base: str, speed: float) -> Clock:
    httpx.put(f"{base}/_control/clock", json={"speed": speed}, timeout=10).raise_for_status()
    before = time.time()
    now = httpx.get(f"{base}/_control/clock", timeout=10).json()["now"]
    after = time.time()
    return Clock((before + after) / 2, float(now), speed)


def add_tasks(base: str, durations: list[float], copies: int) -> tuple[list[list[str]], float]:
    """``copies`` sets of tasks with these running times, in one call; their sim start time."""
    sets = [[str(uuid.uuid4()) for _ in durations] for _ in range(copies)]
    specs = [
        {"uuid": task, "pending_seconds": PENDING, "running_seconds": running}
        for ids in sets
        for task, running in zip(ids, durations, strict=True)
    ]
    before = httpx.get(f"{base}/_control/clock", timeout=10).json()["now"]
    httpx.post(f"{base}/_control/geobox/tasks", json=specs, timeout=60).raise_for_status()
    after = httpx.get(f"{base}/_control/clock", timeout=10).json()["now"]
    return sets, (before + after) / 2


async def fixed_loop(geobox: str, ids: list[str], interval: float, clock: Clock) -> list[float]:
    """Each task checked every ``interval`` wall seconds until it ends: when each was seen."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:

        async def one(task: str) -> float:
            while True:
                r = await client.get(f"{geobox}tasks/{task}/")
                r.raise_for_status()
                if r.json()["state"] in FINAL:
                    return clock.sim(time.time())
                await asyncio.sleep(interval)

        return await asyncio.gather(*(one(t) for t in ids))


def warden_env(server_url: str, geobox: str, tmp: Path, speed: float) -> dict[str, str]:
    return {
        "TASKWARDEN_REDIS_URL": server_url,
        "TASKWARDEN_DATA_DIR": str(tmp / "data"),
        "TASKWARDEN_ARCHIVE_URL": (tmp / "archive").as_uri(),
        "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": geobox,
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": TOKEN,
        "TASKWARDEN_DISPATCH_INTERVAL": str(1.0 / speed),
        "TASKWARDEN_POLL__INITIAL": str(2.0 / speed),
        "TASKWARDEN_POLL__MAXIMUM": str(60.0 / speed),
        "TASKWARDEN_LOG_FORMAT": "json",
        "TASKWARDEN_LOG_LEVEL": "warning",
    }


def wait_final(store: Store, wids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watches = store.get_many(wids)
        if all(w is not None and w.state.final for w in watches):
            return
        time.sleep(0.05)
    raise SystemExit("the warden did not see every task end in time")


def measure(args: argparse.Namespace) -> dict[str, Run]:
    rng = random.Random(args.seed)
    durations = [round(rng.uniform(30, 240), 1) for _ in range(args.tasks)]
    port = free_port()
    sim = start_simulator(port)
    base = f"http://127.0.0.1:{port}"
    geobox = f"{base}/geobox/v1/"
    runs: dict[str, Run] = {}
    try:
        clock = set_speed(base, args.speed)
        with tempfile.TemporaryDirectory(prefix="taskwarden-latency-") as name:
            tmp = Path(name)
            with RedisServer(tmp / "redis", persist=False) as server:
                store = Store.from_url(server.url)
                env = warden_env(server.url, geobox, tmp, args.speed)
                with Service(env, poll_concurrency=1, log_dir=tmp / "logs"):
                    # a task that is done at once: the warden is up once it has seen it end
                    warm = str(uuid.uuid4())
                    spec = {"uuid": warm, "pending_seconds": 0, "running_seconds": 0}
                    httpx.post(f"{base}/_control/geobox/tasks", json=spec).raise_for_status()
                    reg = Registration(provider="geobox", remote_id=warm, archive=False)
                    store.register(reg, time.time())
                    wait_final(store, [watch_id("geobox", warm)], 120)

                    sets, started = add_tasks(base, durations, 3)
                    ends = [started + PENDING + d for d in durations]
                    for task in sets[0]:
                        reg = Registration(provider="geobox", remote_id=task, archive=False)
                        store.register(reg, time.time())

                    async def loops() -> tuple[list[float], list[float]]:
                        fast = fixed_loop(geobox, sets[1], 1.0 / args.speed, clock)
                        slow = fixed_loop(geobox, sets[2], 60.0 / args.speed, clock)
                        return await asyncio.gather(fast, slow)

                    seen_fast, seen_slow = asyncio.run(loops())
                    wids = [watch_id("geobox", t) for t in sets[0]]
                    wait_final(store, wids, 600)
                    watches = store.get_many(wids)
                store.close()
        counts = httpx.get(f"{base}/_control/stats?by_task=true", timeout=30).json()["tasks"]
    finally:
        sim.terminate()
        sim.wait()

    seen_warden = []
    for w in watches:
        assert w is not None and w.finished_at is not None
        seen_warden.append(clock.sim(w.finished_at))
    label = "taskwarden"
    for name, seen, ids in (
        (label, seen_warden, sets[0]),
        ("SDK loop, interval=1", seen_fast, sets[1]),
        ("SDK loop, interval=60", seen_slow, sets[2]),
    ):
        runs[name] = Run(
            delays=[s - e for s, e in zip(seen, ends, strict=True)],
            requests=[counts.get(t, 0) for t in ids],
        )
    return runs


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--speed", type=float, default=5.0, help="simulated seconds per second")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    runs = measure(args)
    print(
        f"{args.tasks} geobox tasks, 30-240 s of progress each, simulator clock x{args.speed:g}; "
        "delays in simulated seconds"
    )
    print(f"{'poller':<30} {'delay median':>12} {'delay p99':>10} {'requests/task':>14}")
    for name, run in runs.items():
        print(
            f"{name:<30} {statistics.median(run.delays):11.1f}s {p99(run.delays):9.1f}s "
            f"{statistics.mean(run.requests):14.1f}"
        )


if __name__ == "__main__":
    main()
