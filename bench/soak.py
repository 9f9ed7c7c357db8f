"""A warden at steady state: is its memory flat?

    python bench/soak.py [--minutes 5] [--rate 10] [--retention 30] [--warmup S]

Runs a whole warden (``taskwarden.processes.Service``: beat, poll and archive workers) on a
Redis of its own, against the simulator in its own process. Tasks are registered continuously
(``--rate`` a second), each runs about 2 s and succeeds with a 1 KB output that is archived;
every watch is kept ``--retention`` seconds once final (``TASKWARDEN_RETENTION__FINISHED``),
and the events stream is capped (``TASKWARDEN_RETENTION__EVENTS``) so that it too reaches its
size. Every ``--every`` seconds it prints Redis ``used_memory``, the watches held, those
finished so far and the resident memory (RSS) of each worker with its pool children.

The anchor is the warm-up sample (taken once retention and the events cap have had time to
fill: ``--warmup``, by default 60 s after the later of the two): the flatness ratio is
last/anchor, 1.00 for flat memory, and the growth per watch registered after the anchor is
printed beside the ~4.6 KB a watch cost when nothing was ever removed (issue 11);
``--retention 0`` (nothing removed) measures that anchor on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from _simulator import start_simulator

from taskwarden.models import Registration
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer, free_port
from taskwarden.store.watches import Store

TOKEN = "sim-token"
NO_RETENTION_BYTES = 4.6 * 1024  # per finished watch, measured when nothing was removed
KEEP_ALL = 3650 * 24 * 3600.0  # ten years: what --retention 0 sets
LIVE = ("pending", "running", "archiving")  # registered minus these: the watches finished


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (a Celery worker and its pool)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


@dataclass
class Sample:
    at: float
    registered: int
    used_memory: int
    watches: int
    finished: int
    rss: dict[str, int]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=10.0, help="registrations per second")
    parser.add_argument(
        "--retention", type=float, default=30.0, help="seconds kept once final; 0: for ever"
    )
    parser.add_argument("--events", type=int, default=2000, help="events stream cap")
    parser.add_argument("--warmup", type=float, default=None, help="s before the anchor sample")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    args = parser.parse_args()
    # about four transitions a watch (pending, running, archiving, succeeded) fill the stream
    filled = max(args.retention, args.events / (4 * args.rate))
    warmup = filled + 60 if args.warmup is None else args.warmup
    port = free_port()
    sim = start_simulator(port)
    base = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            samples = soak(base, Path(tmp), args, warmup)
    finally:
        sim.terminate()
        sim.wait(10)
    report(samples, warmup, args)


def soak(base: str, tmp: Path, args: argparse.Namespace, warmup: float) -> list[Sample]:
    with RedisServer(tmp / "redis", persist=False) as server:
        store = Store.from_url(server.url)
        env = {
            "TASKWARDEN_REDIS_URL": server.url,
            "TASKWARDEN_DATA_DIR": str(tmp / "data"),
            "TASKWARDEN_ARCHIVE_URL": (tmp / "archive").as_uri(),
            "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": f"{base}/geobox/v1",
            "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": TOKEN,
            "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "true",
            "TASKWARDEN_DISPATCH_INTERVAL": "0.5",
            "TASKWARDEN_POLL__INITIAL": "0.5",
            "TASKWARDEN_POLL__MAXIMUM": "1",
            "TASKWARDEN_RETENTION__FINISHED": str(args.retention or KEEP_ALL),
            "TASKWARDEN_RETENTION__EVENTS": str(args.events),
            "TASKWARDEN_LOG_LEVEL": "warning",
            "TASKWARDEN_LOG_FORMAT": "json",
        }
        samples: list[Sample] = []
        service = Service(env, poll_concurrency=2, archive_concurrency=1, log_dir=tmp / "logs")
        with service, httpx.Client(base_url=base, timeout=30) as http:
            roles = list(service.argvs)
            started = time.monotonic()
            end = started + args.minutes * 60
            next_sample = started + args.every
            registered = 0
            print(f"{'t (s)':>6} {'used_memory':>12} {'watches':>8} {'finished':>9} "
                  + " ".join(f"{r + ' RSS':>12}" for r in roles if r != "beat"))  # fmt: skip
            while (now := time.monotonic()) < end:
                due = int((now - started) * args.rate) - registered
                if due > 0:
                    ids = [str(uuid.uuid4()) for _ in range(due)]
                    specs = [{"uuid": i, "pending_seconds": 0.5, "running_seconds": 1.5,
                              "file_size": 1024} for i in ids]  # fmt: skip
                    http.post("/_control/geobox/tasks", json=specs).raise_for_status()
                    for i in ids:
                        store.register(Registration(provider="geobox", remote_id=i), time.time())
                    registered += due
                if now >= next_sample:
                    next_sample += args.every
                    info = store.redis.info("memory")
                    counts = store.counts()
                    sample = Sample(
                        at=now - started,
                        registered=registered,
                        used_memory=int(info["used_memory"]),
                        watches=int(store.redis.zcard("taskwarden:watches")),
                        finished=registered - sum(counts[s] for s in LIVE),
                        rss={r: rss_kb(p.pid) for r, p in running(service).items()},
                    )
                    samples.append(sample)
                    print(f"{sample.at:6.0f} {sample.used_memory:12,d} {sample.watches:8d} "
                          f"{sample.finished:9d} " + " ".join(
                              f"{sample.rss[r] * 1024:12,d}" for r in roles if r != "beat"),
                          flush=True)  # fmt: skip
                time.sleep(0.05)
        store.close()
    return samples


def running(service: Service) -> dict[str, subprocess.Popen[bytes]]:
    """Each role's process as the supervisor holds it now (it restarts one that died)."""
    return dict(zip(service.argvs, service.processes, strict=True))


def report(samples: list[Sample], warmup: float, args: argparse.Namespace) -> None:
    after = [s for s in samples if s.at >= warmup]
    if len(after) < 2:
        print(f"too short: no two samples after the {warmup:.0f} s warm-up")
        return
    first, last = after[0], after[-1]
    registered = last.registered - first.registered
    finished = last.finished - first.finished
    grown = last.used_memory - first.used_memory
    print(
        f"\nsteady state from t={first.at:.0f} s to t={last.at:.0f} s ({args.rate:g}/s "
        f"registered, retention {args.retention:g} s, events cap {args.events})"
    )
    print(
        f"Redis used_memory: {first.used_memory:,d} -> {last.used_memory:,d} B, "
        f"flatness last/first = {last.used_memory / first.used_memory:.2f}"
    )
    if registered > 0:
        print(
            f"  growth per watch registered: {grown / registered:,.0f} B over {registered} "
            f"({finished} finished; anchor without retention: ~{NO_RETENTION_BYTES:,.0f} B, "
            f"ratio {grown / registered / NO_RETENTION_BYTES:.2f})"
        )
    print(f"watches held: {first.watches} -> {last.watches}")
    if registered and finished < 0.9 * registered:
        print(
            f"NOT at steady state: {finished} of {registered} registered finished in the "
            "window; memory follows the growing backlog (a slower --rate, a quieter machine)"
        )
    for role in first.rss:
        if role == "beat":
            continue
        print(
            f"{role} worker RSS: {first.rss[role] * 1024:,d} -> {last.rss[role] * 1024:,d} B, "
            f"flatness last/first = {last.rss[role] / max(1, first.rss[role]):.2f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
