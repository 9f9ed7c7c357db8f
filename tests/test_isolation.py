"""Isolation between providers, end to end on real processes and the simulator: a platform that
accepts and never answers, and one that trickles its answers a byte at a time, beside a healthy
one; and a rate limit slower than the backlog it is given."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.generic import profile
from taskwarden.simulator.server import SimulatorServer

from .conftest import running_warden, wait_for

pytestmark = pytest.mark.slow

CAP = 5  # checks in flight per provider, and polls per message: one message each
DEADLINE = "no complete answer within the check deadline (2 s)"
ISAHIT_PROJECT = "sim-project"


def bad_neighbours(sim: SimulatorServer) -> dict[str, str]:
    """Settings for a hung isahit and a trickling http provider beside the default geobox."""
    return {
        "TASKWARDEN_PROVIDERS__ISAHIT__BASE_URL": sim.isahit_url,
        "TASKWARDEN_PROVIDERS__ISAHIT__ACCESS_ID": "sim-access-id",
        "TASKWARDEN_PROVIDERS__ISAHIT__SECRET_KEY": "sim-secret-key",
        "TASKWARDEN_PROVIDERS__HTTP__PROFILES": json.dumps({"acme": profile(sim.generic_url)}),
        "TASKWARDEN_POLL__CHECK_DEADLINE": "2",
        "TASKWARDEN_HTTP__READ_TIMEOUT": "60",  # no per-read timeout comes to the rescue
        "TASKWARDEN_DISPATCH_MAX_IN_FLIGHT": str(CAP),
        "TASKWARDEN_DISPATCH_BATCH_SIZE": str(CAP),
        "TASKWARDEN_RETRY__MAXIMUM_ATTEMPTS": "3",
        # the deadline alone is under test: with the breaker on, 10 checks cut off in a row
        # open the bad platform's circuit and its failures are held, not counted (test_outage)
        "TASKWARDEN_CIRCUIT__ENABLED": "false",
    }


def test_a_hung_and_a_trickling_platform_do_not_hold_up_a_healthy_one(
    tmp_path: Path, server: SimulatorServer
) -> None:
    """With every request to one platform hanging and every status answer of another trickled
    at a byte a second, the healthy provider's watches registered meanwhile all end, as do the
    bad ones: each check cut off at the deadline is recorded as a retryable error until the
    retry policy gives up. Neither bad provider ever holds more than its cap of checks."""
    server.inject(kind="hang", platform="isahit", delay=600, count=None)
    jobs = server.generic.add_tasks([{"running_seconds": 600} for _ in range(10)])
    server.inject(
        kind="trickle", platform="generic", route="api/projects/{project}/jobs/{job_id}",
        delay=1.0, count=None,
    )  # fmt: skip
    healthy = server.geobox.add_tasks(
        [{"pending_seconds": 0.5, "running_seconds": 1} for _ in range(20)]
    )
    with running_warden(tmp_path, server, processes=3, **bad_neighbours(server)) as w:
        hung = [f"hung-{i}" for i in range(10)]
        for remote in hung:
            w.send_track(provider="isahit", remote_id=remote, params={"project_id": ISAHIT_PROJECT})
        for job in jobs:
            w.send_track(provider="http", remote_id=f"acme:{job.id}", params={"project": "demo"})

        # both bad platforms are holding checks before the healthy watches are registered
        def holding() -> bool:
            since = time.time() - 5  # the lease
            held = [w.store.in_flight(p, since) for p in ("isahit", "http")]
            asked = [server.stats.count(platform=p) for p in ("isahit", "generic")]
            return held == [CAP, CAP] and min(asked) > 0

        wait_for(holding, timeout=60)
        for task in healthy:
            w.send_track(provider="geobox", remote_id=task.uuid, archive=False)

        held: list[int] = []

        def healthy_done() -> bool:
            since = time.time() - 5  # the lease
            held.extend(w.store.in_flight(p, since) for p in ("isahit", "http"))
            watches = [w.store.get(watch_id("geobox", t.uuid)) for t in healthy]
            return all(x is not None and x.state.final for x in watches)

        wait_for(healthy_done, timeout=90, every=0.2)
        for task in healthy:
            assert w.wait_final(watch_id("geobox", task.uuid)).state is State.SUCCEEDED
        assert max(held) <= CAP

        for wid in [watch_id("isahit", r) for r in hung] + [
            watch_id("http", f"acme:{j.id}") for j in jobs
        ]:
            watch = w.wait_final(wid, timeout=120)
            assert watch.state is State.ERROR, wid
            assert watch.last_error == DEADLINE
            assert watch.polls == 3  # every check ended, and each was recorded
            notes = [h["note"] or "" for h in w.store.history(wid)]
            assert any(DEADLINE in n for n in notes), notes
        for job in jobs:  # one status request per recorded check: none was left hanging
            wid = watch_id("http", f"acme:{job.id}")
            polls = w.store.get(wid).polls  # type: ignore[union-attr]
            assert server.stats.count(platform="generic", task=job.id) == polls
