"""The simulator in one step: `taskwarden simulate` says what it serves at `/` and prints the
settings that point a warden at it; `taskwarden run --simulator` serves one and polls it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from taskwarden import Client
from taskwarden.config import Settings, load_settings
from taskwarden.lifecycle import Remote
from taskwarden.net.client import build_client
from taskwarden.providers import generic, geobox
from taskwarden.providers.base import Target
from taskwarden.redis_server import free_port
from taskwarden.simulator.app import Simulation

from .conftest import wait_for

PLATFORMS = {name: f"{p.prefix}/" for name, p in Simulation().platforms.items()}


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_")}
    return env | {"TASKWARDEN_DATA_DIR": str(tmp / "data")}


def _index(url: str) -> dict[str, object] | None:
    try:
        answer = httpx.get(f"{url}/", timeout=2)
    except httpx.TransportError:
        return None
    return answer.json() if answer.status_code == 200 else None


@contextmanager
def _simulate(tmp: Path) -> Iterator[str]:
    """`taskwarden simulate` on a free port; yields its URL."""
    port = free_port()
    with (tmp / "simulate.log").open("w") as stdout, (tmp / "simulate.err").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskwarden", "simulate", "--port", str(port)],
            env=_clean_env(tmp), stdout=stdout, stderr=stderr,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _index(url), timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulate_answers_its_root_with_the_platforms_it_serves(tmp_path: Path) -> None:
    """GET / on `taskwarden simulate` names every platform with its base path and URL."""
    with _simulate(tmp_path) as url:
        index = _index(url)
    assert index is not None
    platforms = index["platforms"]
    assert isinstance(platforms, dict)
    assert {name: p["base_path"] for name, p in platforms.items()} == PLATFORMS
    assert platforms["geobox"]["url"] == f"{url}/geobox/v1/"
    assert set(PLATFORMS) >= {"geobox", "up42", "isahit", "earthone", "descarteslabs", "generic"}


def _sourced(exports: Path) -> dict[str, str]:
    """The TASKWARDEN_* variables a POSIX shell has after sourcing ``exports``."""
    shell = subprocess.run(
        ["/bin/sh", "-c", '. "$1" && env -0', "sh", str(exports)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    pairs = (item.split("=", 1) for item in shell.stdout.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("TASKWARDEN_")}


def test_print_env_is_strict_settings_whose_adapters_reach_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`simulate --print-env` prints shell export lines only; sourced by a shell they are
    settings load_settings accepts (no unknown names), loopback allowed, and the Geobox and
    generic http adapters built from them see tasks scripted on the simulator served there."""
    with _simulate(tmp_path) as url:
        port = url.rsplit(":", 1)[1]
        printed = subprocess.run(
            [sys.executable, "-m", "taskwarden", "simulate", "--port", port, "--print-env"],
            env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        lines = printed.stdout.splitlines()
        assert lines and all(line.startswith("export TASKWARDEN_") for line in lines)
        exports = tmp_path / "sim.env"
        exports.write_text(printed.stdout)
        env = _sourced(exports)
        assert len(env) == len(lines)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.http.allow_private_addresses is True
        assert settings.providers.geobox.base_url == f"{url}/geobox/v1/"
        assert settings.providers.up42.base_url == f"{url}/up42"
        assert settings.providers.isahit.base_url == f"{url}/isahit/"

        scripted = httpx.post(
            f"{url}/_control/geobox/tasks", json={"outcome": "never", "running_seconds": 60}
        ).json()["tasks"][0]["uuid"]
        job = httpx.post(f"{url}/_control/generic/tasks", json={"running_seconds": 60})
        job_id = job.json()["tasks"][0]["id"]

        async def observe(s: Settings) -> list[Remote]:
            async with build_client(s.http) as client:
                box = await geobox.build(s, client).fetch_status(Target(scripted))
                acme = await generic.build(s, client).fetch_status(
                    Target(f"acme:{job_id}", {"project": "demo"})
                )
                return [box.remote, acme.remote]

        assert asyncio.run(observe(settings)) == [Remote.RUNNING, Remote.RUNNING]


def test_run_with_simulator_serves_a_tracked_simulator_task_to_success(tmp_path: Path) -> None:
    """`run --simulator` serves a simulator of its own and points the warden at it: a Geobox
    task scripted through the simulator's control API and tracked with `track` succeeds, its
    output archived; the dashboard's API lists the watch."""
    env = _clean_env(tmp_path) | {
        "TASKWARDEN_DISPATCH_INTERVAL": "0.2",
        "TASKWARDEN_POLL__INITIAL": "0.2",
        "TASKWARDEN_POLL__MAXIMUM": "0.5",
        "TASKWARDEN_API__PORT": str(free_port()),
    }
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "run", "-c", "1", "--simulator",
         "--simulator-port", str(sim_port)],
        env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        wait_for(lambda: _index(sim_url), timeout=30)
        spec = {"running_seconds": 0.5, "file_name": "ndvi.tif", "file_size": 4096}
        uuid = httpx.post(f"{sim_url}/_control/geobox/tasks", json=spec).json()["tasks"][0]["uuid"]
        wait_for((tmp_path / "data" / "redis.url").exists, timeout=30)
        tracked = subprocess.run(
            [sys.executable, "-m", "taskwarden", "track", "geobox", uuid, "--json"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert tracked.returncode == 0, tracked.stderr
        wid = json.loads(tracked.stdout)["watch_id"]

        def state() -> str | None:
            shown = subprocess.run(
                [sys.executable, "-m", "taskwarden", "show", wid, "--json"],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            found = json.loads(shown.stdout)["state"] if shown.returncode == 0 else None
            return found if found in ("succeeded", "failed", "error") else None

        assert wait_for(state, timeout=60, every=0.5) == "succeeded"
        described = httpx.get(f"{sim_url}/_control/geobox/tasks/{uuid}").json()
        archived = tmp_path / "data" / "archive" / "geobox" / uuid / "ndvi.tif"
        assert archived.stat().st_size == 4096
        manifest = json.loads(archived.with_name("manifest.json").read_text())
        by_name = {o["name"]: o["sha256"] for o in manifest["outputs"]}
        assert by_name["ndvi.tif"] == described["sha256"]

        def listed() -> list[str] | None:
            try:
                with Client(f"http://127.0.0.1:{env['TASKWARDEN_API__PORT']}",
                            token=(tmp_path / "data" / "api-token").read_text().strip()) as tw:  # fmt: skip
                    return [w["id"] for w in tw.list(limit=10)]
            except (httpx.TransportError, OSError):
                return None

        assert wid in wait_for(listed, timeout=30)
    finally:
        run.terminate()
        run.wait(30)
        log.close()
    assert run.returncode == 0, (tmp_path / "run.log").read_text()[-2000:]
