"""How late a healthy provider sees its tasks end, alone and beside platforms that hang.

    python bench/isolation.py [--healthy 40] [--hung 200] [--trickled 20] [--processes 4]

Runs the real processes (beat, control, poll, archive workers) against the simulator twice:
first with ``--healthy`` Geobox tasks alone, then with the same number again beside ``--hung``
isahit watches whose every request hangs and ``--trickled`` http watches whose status answers
come a byte a second, all registered before the healthy ones. Prints the end-detection delay
of the healthy watches (the warden's ``finished_at`` minus the moment the simulator's script
ended the task; p50, p95, max) in both runs, and their ratio: the anchor is the first run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from celery import Celery

from taskwarden.models import watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer
from taskwarden.simulator.generic import profile
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store

PENDING, RUNNING = 1.0, 2.0  # each healthy task's script: seconds pending, at least as many running


def settings(sim: SimulatorServer, redis_url: str, data: Path, cap: int) -> dict[str, str]:
    return {
        "TASKWARDEN_REDIS_URL": redis_url,
        "TASKWARDEN_DATA_DIR": str(data),
        "TASKWARDEN_ARCHIVE_URL": (data / "archive").as_uri(),
        "TASKWARDEN_LOG_LEVEL": "warning",
        "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "true",
        "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "sim-token",
        "TASKWARDEN_PROVIDERS__ISAHIT__BASE_URL": sim.isahit_url,
        "TASKWARDEN_PROVIDERS__ISAHIT__ACCESS_ID": "sim-access-id",
        "TASKWARDEN_PROVIDERS__ISAHIT__SECRET_KEY": "sim-secret-key",
        "TASKWARDEN_PROVIDERS__HTTP__PROFILES": json.dumps({"acme": profile(sim.generic_url)}),
        "TASKWARDEN_DISPATCH_INTERVAL": "0.2",
        "TASKWARDEN_POLL__INITIAL": "0.2",
        "TASKWARDEN_POLL__BACKOFF": "1.2",
        "TASKWARDEN_POLL__MAXIMUM": "0.5",
        "TASKWARDEN_POLL__CHECK_DEADLINE": "5",
        "TASKWARDEN_LEASE_SECONDS": "20",
        "TASKWARDEN_DISPATCH_MAX_IN_FLIGHT": str(cap),
        "TASKWARDEN_DISPATCH_BATCH_SIZE": str(cap),
    }


def run(sim: SimulatorServer, healthy: int, hung: int, trickled: int, args: argparse.Namespace
        ) -> list[float]:  # fmt: skip
    """The end-detection delays of ``healthy`` watches, beside ``hung`` and ``trickled`` ones."""
    sim.reset()
    if hung:
        sim.inject(kind="hang", platform="isahit", delay=600, count=None)
    if trickled:
        sim.inject(kind="trickle", platform="generic", delay=1.0, count=None,
                   route="api/projects/{project}/jobs/{job_id}")  # fmt: skip
    jobs = sim.generic.add_tasks([{"running_seconds": 3600} for _ in range(trickled)])
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis:
        env = settings(sim, redis.url, Path(tmp) / "data", args.cap)
        env["TASKWARDEN_LOG_LEVEL"] = "info" if args.logs else "warning"
        env["TASKWARDEN_LOG_FORMAT"] = "json"
        store = Store.from_url(redis.url)
        producer = Celery(broker=redis.url, set_as_current=False)
        with (
            Service(env, poll_concurrency=args.processes, log_dir=args.logs or Path(tmp) / "logs"),
            producer.connection_for_write() as conn,
        ):
            while not store.last_heartbeat("dispatch"):
                time.sleep(0.1)

            def track(**kwargs: object) -> None:
                producer.send_task("taskwarden.track", kwargs=kwargs, connection=conn)

            for i in range(hung):
                track(provider="isahit", remote_id=f"hung-{i}", params={"project_id": "p"})
            for job in jobs:
                track(provider="http", remote_id=f"acme:{job.id}", params={"project": "demo"})
            time.sleep(3)  # the bad neighbours (if any) hold their checks; the workers are warm
            rng = random.Random(1)
            running = [RUNNING + 4 * rng.random() for _ in range(healthy)]
            tasks = sim.geobox.add_tasks(
                [{"pending_seconds": PENDING, "running_seconds": r} for r in running]
            )
            added = time.time()
            for task in tasks:
                track(provider="geobox", remote_id=task.uuid, archive=False)
            ids = [watch_id("geobox", t.uuid) for t in tasks]
            ends = [added + PENDING + r for r in running]
            limit = time.monotonic() + 600
            while time.monotonic() < limit:
                watches = store.get_many(ids)
                if all(w is not None and w.state.final for w in watches):
                    break
                time.sleep(0.2)
            # finished_at is the time its poll batch began, so a delay can be a little below 0
            delays = [
                w.finished_at - end for w, end in zip(watches, ends, strict=True)
                if w and w.finished_at
            ]  # fmt: skip
        store.close()
    return delays


def summary(delays: list[float]) -> str:
    if not delays:
        return "none ended"
    q = statistics.quantiles(delays, n=20) if len(delays) > 1 else [delays[0]] * 19
    return f"p50 {statistics.median(delays):.2f} s, p95 {q[18]:.2f} s, max {max(delays):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=40)
    parser.add_argument("--hung", type=int, default=200)
    parser.add_argument("--trickled", type=int, default=20)
    parser.add_argument("--processes", type=int, default=4, help="poll worker processes")
    parser.add_argument("--cap", type=int, default=50, help="DISPATCH_MAX_IN_FLIGHT (= batch)")
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    args = parser.parse_args()
    with SimulatorServer() as sim:
        alone = run(sim, args.healthy, 0, 0, args)
        beside = run(sim, args.healthy, args.hung, args.trickled, args)
    print(f"{args.healthy} healthy geobox watches, {args.processes} poll processes, cap {args.cap}")
    print(f"  alone (anchor):                          {summary(alone)}")
    print(f"  beside {args.hung} hung + {args.trickled} trickled watches: {summary(beside)}")
    if alone and beside:
        p50 = statistics.median(beside) - statistics.median(alone)
        print(f"  p50 beside - alone: {p50:+.2f} s (ended {len(beside)}/{args.healthy})")
        ratio = max(statistics.median(beside), 0.01) / max(statistics.median(alone), 0.01)
        print(f"  p50 ratio beside / alone: {ratio:.2f}x")


if __name__ == "__main__":
    main()
