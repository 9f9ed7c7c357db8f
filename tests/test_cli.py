"""The command line on the zero-setup path: `taskwarden run` with its embedded Redis, found again
by later commands; `taskwarden simulate` serving on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from taskwarden.redis_server import free_port
from taskwarden.simulator.server import SimulatorServer

from .conftest import SIM_TOKEN, wait_for


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskwarden", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_with_embedded_redis_end_to_end(tmp_path: Path, sim: SimulatorServer) -> None:
    """With no Redis configured, `run` starts its own; `track` and `show` find it; SIGTERM stops
    everything, Redis included, and the archive is in the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_")}
    env |= {
        "TASKWARDEN_DATA_DIR": str(tmp_path),
        "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": SIM_TOKEN,
        "TASKWARDEN_DISPATCH_INTERVAL": "0.2",
        "TASKWARDEN_POLL__INITIAL": "0.2",
        "TASKWARDEN_POLL__MAXIMUM": "0.5",
    }
    task = sim.geobox.add_task(running_seconds=0.5, file_name="out.bin", file_size=1000)
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "run", "-c", "1"], env=env, stdout=log, stderr=log
    )
    try:
        url_file = tmp_path / "redis.url"
        wait_for(url_file.exists, timeout=20)
        assert oct(url_file.stat().st_mode & 0o777) == "0o600"  # it holds the Redis password
        tracked = cli(env, "track", "geobox", task.uuid, "--json")
        assert tracked.returncode == 0, tracked.stderr
        wid = json.loads(tracked.stdout)["watch_id"]

        def succeeded() -> bool:
            shown = cli(env, "show", wid, "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["state"] == "succeeded"

        wait_for(succeeded, timeout=60, every=0.5)
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(30)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert (
        tmp_path / "archive" / "geobox" / task.uuid / "out.bin"
    ).read_bytes() == task.output_bytes()
    redis_url = url_file.read_text()
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    try:
        client.ping()
        stopped = False
    except redis.ConnectionError:
        stopped = True
    assert stopped, "the embedded Redis outlived `taskwarden run`"


def test_simulate_serves_on_the_given_port() -> None:
    """`taskwarden simulate --port N` answers Geobox calls and control calls on loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "simulate", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/_control/stats", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=20, every=0.1)
        made = httpx.post(f"{base}/_control/geobox/tasks", json=[{"uuid": "abc-1"}], timeout=5)
        assert made.status_code == 201
        doc = httpx.get(
            f"{base}/geobox/v1/tasks/abc-1/", headers={"Authorization": f"Bearer {SIM_TOKEN}"}
        )
        assert doc.json()["uuid"] == "abc-1"
        denied = httpx.get(f"{base}/geobox/v1/tasks/abc-1/")
        assert denied.status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
