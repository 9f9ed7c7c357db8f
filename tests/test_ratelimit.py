"""The cluster-wide rate limit: one schedule in Redis, whoever asks, wherever they run."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import redis.asyncio as aioredis

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.ratelimit import Limit, RateLimiter

from .conftest import running_warden, wait_for


def grants(redis_url: str, count: int, limit: Limit, out: list[float]) -> None:
    """One worker process's worth: its own event loop and Redis client, asking ``count`` times."""

    async def go() -> None:
        limiter = RateLimiter(aioredis.Redis.from_url(redis_url), {"p": limit})
        for _ in range(count):
            await limiter.acquire("p")
            out.append(time.monotonic())
        await limiter.aclose()

    asyncio.run(go())


def test_two_workers_share_one_rate(redis_url: str) -> None:
    """Two independent limiters together never exceed rate + burst in any one-second window."""
    limit = Limit(rate=40, burst=4)
    times: list[float] = []
    threads = [
        threading.Thread(target=grants, args=(redis_url, 40, limit, times)) for _ in range(2)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    assert len(times) == 80
    # 80 requests at 40/s with 4 allowed ahead take at least (80 - 4) / 40 = 1.9 s
    assert times[-1] - started >= 1.8
    worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert worst <= 40 + 4


def test_unlimited_provider_never_waits(redis_url: str) -> None:
    """A provider with no configured limit is not slowed down at all."""

    async def go() -> float:
        limiter = RateLimiter(aioredis.Redis.from_url(redis_url), {})
        waited = sum([await limiter.acquire("free") for _ in range(100)])
        await limiter.aclose()
        return waited

    assert asyncio.run(go()) == 0


def test_the_platform_never_sees_more_than_the_configured_rate(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """With 60 watches due at once and a limit of 10/s, the simulator sees about 10 requests a
    second across all worker processes, and every watch still finishes."""
    limits = {
        "TASKWARDEN_RATE_LIMITS__GEOBOX__RATE": "10",
        "TASKWARDEN_RATE_LIMITS__GEOBOX__BURST": "2",
    }
    tasks = sim.geobox.add_tasks([{"pending_seconds": 3, "file_size": 10} for _ in range(60)])
    ids = {t.uuid for t in tasks}

    def seen() -> int:
        return sum(sim.stats.count(task=uuid) for uuid in ids)

    with running_warden(tmp_path, sim, **limits) as w:
        for task in tasks:
            w.send_track(provider="geobox", remote_id=task.uuid, archive=False)
        wait_for(lambda: seen() > 0, timeout=30, every=0.01)
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            samples.append((time.monotonic(), seen()))
            time.sleep(0.1)
        for task in tasks:
            assert w.wait_final(watch_id("geobox", task.uuid), timeout=60).state is State.SUCCEEDED
    # between any two moments, at most rate * elapsed + burst new requests; slots are spaced on
    # Redis's clock, and a request's trip from its slot to the server adds a little jitter (+1)
    for i, (t_a, n_a) in enumerate(samples):
        for t_b, n_b in samples[i + 1 :]:
            assert n_b - n_a <= 10 * (t_b - t_a) + 2 + 1, (
                f"{n_b - n_a} requests in {t_b - t_a:.2f} s"
            )
    # it was limited, not stalled (a third of the rate: a loaded machine serves it slower)
    assert samples[-1][1] - samples[0][1] >= 10


def test_a_backlog_beyond_the_rate_waits_unclaimed_and_no_request_is_wasted(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """30 watches due at once, a limit of 1/s and an 8 s lease (3 s check deadline): dispatch
    claims only what the limit serves within a lease, so no claim outlives its lease waiting
    for a slot. The platform sees exactly one request per watch, every watch ends after one
    check, and the dispatch lag shows the backlog while it lasts."""
    settings = {
        "TASKWARDEN_RATE_LIMITS__GEOBOX__RATE": "1",
        "TASKWARDEN_RATE_LIMITS__GEOBOX__BURST": "1",
        "TASKWARDEN_LEASE_SECONDS": "8",
        "TASKWARDEN_POLL__CHECK_DEADLINE": "3",
    }
    tasks = sim.geobox.add_tasks([{"pending_seconds": 0, "running_seconds": 0} for _ in range(30)])
    ids = [watch_id("geobox", t.uuid) for t in tasks]
    with running_warden(tmp_path, sim, **settings) as w:
        for task in tasks:
            w.send_track(provider="geobox", remote_id=task.uuid, archive=False)
        lags: list[float] = []

        def ended() -> bool:
            lags.append(w.store.dispatch_lag(time.time()))
            return all((x := w.store.get(wid)) is not None and x.state.final for wid in ids)

        wait_for(ended, timeout=120, every=0.5)
        for wid in ids:
            watch = w.store.get(wid)
            assert watch is not None and (watch.state, watch.polls) == (State.SUCCEEDED, 1)
    for task in tasks:
        assert sim.stats.count(task=task.uuid) == 1, task.uuid
    assert max(lags) > 5  # the last watches waited about 30 s for their turn
