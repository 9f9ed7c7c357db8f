"""What many `Client.wait()` callers cost the platform, and how soon each returns.

    python bench/waiters.py [--waiters 50] [--interval 1.0]

Runs the real service with its HTTP API against the simulator, registers ``--waiters`` Geobox
tasks that run 5-15 s, and has one thread per task block in ``Client.wait()``. Prints the requests
the platform received for those tasks (the warden's own polls and downloads), what the same
waits would have cost had each script polled the platform itself every ``--interval`` seconds
(as the SDKs' ``task.wait()`` does), the API reads the waiters made, and how long after the
warden recorded the final state each ``wait()`` returned.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from taskwarden import Client
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer, free_port
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store

TOKEN = "bench-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiters", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    rng = random.Random(1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimulatorServer() as sim,
        RedisServer(Path(tmp) / "redis", persist=False) as redis_server,
    ):
        port = free_port()
        env = {
            "TASKWARDEN_REDIS_URL": redis_server.url,
            "TASKWARDEN_DATA_DIR": str(Path(tmp) / "data"),
            "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
            "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "sim-token",
            "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "true",
            "TASKWARDEN_API__PORT": str(port),
            "TASKWARDEN_API__TOKEN": TOKEN,
            "TASKWARDEN_LOG_LEVEL": "warning",
        }
        store = Store.from_url(redis_server.url)
        with Service(env, poll_concurrency=2, api=True, log_dir=Path(tmp) / "logs"):
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not store.last_heartbeat("dispatch") or not _up(url):
                if time.monotonic() > deadline:
                    raise SystemExit("the service did not start within 60 s")
                time.sleep(0.2)
            durations = [rng.uniform(5, 15) for _ in range(args.waiters)]
            remote_ids: list[str] = []
            results: list[dict[str, Any]] = []
            reads = [0]
            lock = threading.Lock()

            def wait_one(seconds: float) -> None:
                with Client(url, TOKEN) as tw:
                    remote_id = sim.geobox.add_task(running_seconds=seconds, file_size=1000).uuid
                    wid = tw.track("geobox", remote_id)["id"]
                    started = time.time()
                    final = tw.wait(wid, timeout=120, progress_bar=False, interval=args.interval)
                    returned = time.time()
                    gets = round((returned - started) / args.interval) + 1
                with lock:
                    remote_ids.append(remote_id)
                    results.append({**final, "returned": returned, "started": started})
                    reads[0] += gets

            threads = [threading.Thread(target=wait_one, args=(d,)) for d in durations]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            per_task = sim.stats.snapshot({}, by_task=True)["tasks"]
            platform = sum(per_task.get(r, 0) for r in remote_ids)
        store.redis.close()
    lags = sorted(r["returned"] - r["finished_at"] for r in results)
    sdk = sum((r["finished_at"] - r["started"]) / args.interval + 1 for r in results)
    states = {r["state"] for r in results}
    print(f"{len(results)} waiters, every one ended {', '.join(sorted(states))}")
    print(
        f"platform requests for these tasks: {platform} in all (the warden's status checks and"
        " its archiving)"
    )
    print(
        f"a script per task polling the platform every {args.interval:g} s itself: ~{sdk:.0f}"
        " status requests, before any download"
    )
    print(f"API reads by the waiters: ~{reads[0]}, answered from Redis (none reach the platform)")
    print(
        f"wait() returned after the final state was recorded: median {statistics.median(lags):.2f}"
        f" s, max {lags[-1]:.2f} s"
    )


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
