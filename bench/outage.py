"""A platform outage of 500 running watches, with the circuit breaker and without.

    python bench/outage.py [--watches 500] [--outage 600] [--scale 10]

Runs the real service (beat and two poll and archive workers) against the simulator in its own
process. Every watch is registered and seen running; then the simulator answers 503 to every
Geobox request for ``--outage`` seconds, during which every task ends on the platform. Printed
per run: the requests the platform received during the outage (and, with the breaker, those
after its circuit was seen open), and, after it recovers, the
time until the warden has seen every task end (p50 and max), how many requests it received in
the first few seconds of recovery (the backlog burst), and how many watches ended other than
scripted (should be 0).

Time is scaled: the warden's clock is the wall clock, so the outage and every interval of the
warden's policies (retry initial and maximum interval, circuit window, probe interval, ramp,
poll intervals) are divided by ``--scale`` (default 10: a 10-minute outage is run as 60 s,
retries capped at 6 s instead of 60 s, a probe every 1 s instead of 10 s). Request counts
during the outage are then the same as the unscaled run's; times after recovery are to be
multiplied by ``--scale``. In-call retries (``TASKWARDEN_HTTP__RETRIES``, 2 by default: a check
is up to 3 requests) are left at their defaults, unscaled.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from _simulator import start_simulator

from taskwarden.lifecycle import State
from taskwarden.models import Registration, watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer, free_port
from taskwarden.store.watches import Store

TOKEN = "sim-token"
WARM = 5.0  # seconds of healthy checks before the outage (wall)
BURST = 3.0  # seconds after recovery whose requests are counted as the burst (wall)
RUNS = 10**6  # seconds a task runs on the simulator's clock, which the run moves past it


def requests(base: str) -> int:
    total: int = httpx.get(f"{base}/_control/stats", timeout=10).json()["total"]
    return total


def env_for(
    server: RedisServer, geobox: str, tmp: Path, scale: float, breaker: bool
) -> dict[str, str]:
    def scaled(seconds: float) -> str:
        return str(seconds / scale)

    return {
        "TASKWARDEN_REDIS_URL": server.url,
        "TASKWARDEN_DATA_DIR": str(tmp / "data"),
        "TASKWARDEN_ARCHIVE_URL": (tmp / "archive").as_uri(),
        "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": geobox,
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": TOKEN,
        "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "true",
        "TASKWARDEN_LOG_FORMAT": "json",
        "TASKWARDEN_DISPATCH_INTERVAL": "0.2",
        # the defaults, scaled
        "TASKWARDEN_POLL__INITIAL": scaled(2.0),
        "TASKWARDEN_POLL__MAXIMUM": scaled(60.0),
        "TASKWARDEN_RETRY__INITIAL_INTERVAL": scaled(1.0),
        "TASKWARDEN_RETRY__MAXIMUM_INTERVAL": scaled(60.0),
        "TASKWARDEN_RETRY__MAXIMUM_ELAPSED": scaled(24 * 3600.0),
        "TASKWARDEN_CIRCUIT__ENABLED": str(breaker).lower(),
        "TASKWARDEN_CIRCUIT__WINDOW": scaled(120.0),
        "TASKWARDEN_CIRCUIT__PROBE_INTERVAL": scaled(10.0),
        "TASKWARDEN_CIRCUIT__RAMP": scaled(20.0),
    }


def run(base: str, watches: int, outage: float, scale: float, breaker: bool) -> dict[str, float]:
    geobox = f"{base}/geobox/v1/"
    wall_outage = outage / scale
    # every task runs until the simulator's clock is moved past its end, in the middle of the
    # outage: it ends on the platform then, and cannot say so until after
    ids = [str(uuid.uuid4()) for _ in range(watches)]
    specs = [{"uuid": i, "running_seconds": RUNS, "file_size": 100} for i in ids]
    with tempfile.TemporaryDirectory(prefix="taskwarden-outage-") as tmp_name:
        tmp = Path(tmp_name)
        with RedisServer(tmp / "redis", persist=False) as server:
            store = Store.from_url(server.url)
            httpx.post(f"{base}/_control/reset", timeout=10).raise_for_status()
            httpx.post(f"{base}/_control/geobox/tasks", json=specs, timeout=60).raise_for_status()
            for task in ids:
                store.register(Registration(provider="geobox", remote_id=task), time.time())
            wids = [watch_id("geobox", t) for t in ids]
            env = env_for(server, geobox, tmp, scale, breaker)
            with Service(env, poll_concurrency=2, archive_concurrency=2, log_dir=tmp / "logs"):
                deadline = time.monotonic() + 60
                while store.counts()["running"] < watches:
                    if time.monotonic() > deadline:
                        raise SystemExit("the watches were not all running within 60 s")
                    time.sleep(0.1)
                time.sleep(WARM)
                fault = {"kind": "status", "status": 503, "platform": "geobox", "count": None}
                before = requests(base)
                httpx.post(f"{base}/_control/faults", json=fault, timeout=10).raise_for_status()
                opened_at = time.monotonic() + wall_outage / 2
                at_open = None  # requests received when the circuit was seen open
                while time.monotonic() < opened_at:
                    if at_open is None and store.circuits(["geobox"])["geobox"].is_open:
                        at_open = requests(base)
                    time.sleep(0.05)
                end = {"advance": RUNS}
                httpx.put(f"{base}/_control/clock", json=end, timeout=10).raise_for_status()
                time.sleep(wall_outage / 2)
                httpx.delete(f"{base}/_control/faults", timeout=10).raise_for_status()
                recovered = time.time()
                during = requests(base) - before
                circuit = store.circuits(["geobox"])["geobox"]
                time.sleep(BURST)
                burst = requests(base) - before - during
                deadline = time.monotonic() + 600
                while sum(store.counts()[s] for s in ("pending", "running", "archiving")):
                    if time.monotonic() > deadline:
                        raise SystemExit("the watches did not all end within 600 s")
                    time.sleep(0.1)
            ended = [w for w in store.get_many(wids) if w is not None]
            # when the warden saw each end: the check that moved it on from running
            saw = [
                next((h["at"] for h in store.history(w.id) if h["from"] == "running"), recovered)
                for w in ended
            ]
            store.close()
    seen = sorted(max(0.0, at - recovered) for at in saw)
    return {
        "during": during,
        "after_open": during - (at_open - before) if at_open is not None else float("nan"),
        "burst": burst,
        "p50": statistics.median(seen),
        "max": seen[-1],
        "wrong": sum(1 for w in ended if w.state is not State.SUCCEEDED),
        "errors": sum(1 for w in ended if w.state is State.ERROR),
        "opened": circuit.opened,
        "probes": circuit.probes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=500)
    parser.add_argument("--outage", type=float, default=600.0, help="seconds, unscaled")
    parser.add_argument("--scale", type=float, default=10.0, help="time runs this much faster")
    args = parser.parse_args()
    # a SIGTERM unwinds like Ctrl-C, so the service, Redis and the simulator are stopped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    port = free_port()
    sim = start_simulator(port)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, float]] = {}
    try:
        for label, breaker in (("without breaker", False), ("with breaker", True)):
            results[label] = run(base, args.watches, args.outage, args.scale, breaker)
    finally:
        sim.terminate()
        sim.wait()
    s = args.scale
    print(
        f"{args.watches} running watches, a {args.outage:.0f} s Geobox 503 outage "
        f"(run at 1/{s:g} time: {args.outage / s:.0f} s wall); times below are unscaled (x{s:g})"
    )
    print(f"{'':<16} {'requests during':>16} {'once open':>10} {'burst':>8} {'detect p50':>11}"
          f" {'detect max':>11} {'not as scripted':>16} {'opened':>7} {'probes':>7}")  # fmt: skip
    for label, r in results.items():
        print(
            f"{label:<16} {r['during']:>16.0f} {r['after_open']:>10.0f} {r['burst']:>8.0f} "
            f"{r['p50'] * s:>10.1f}s "
            f"{r['max'] * s:>10.1f}s {r['wrong']:>16.0f} {r['opened']:>7.0f} {r['probes']:>7.0f}"
        )
    off, on = results["without breaker"], results["with breaker"]
    if on["during"]:
        print(f"requests during the outage, without / with: {off['during'] / on['during']:.0f}x")
    print(f"burst = requests in the first {BURST * s:.0f} s (unscaled) after recovery")
    print("once open = requests during the outage after the circuit was seen open")
    print(
        "with the breaker, detection waits for the next probe (TASKWARDEN_CIRCUIT__PROBE_INTERVAL)"
        " and the ramp (TASKWARDEN_CIRCUIT__RAMP); requests during the outage include the checks"
        " already in flight when the circuit opened"
    )


if __name__ == "__main__":
    main()
