"""``taskwarden demo``: the whole service against the simulator, checked end to end.

It starts a private Redis, the simulator, the beat scheduler and the workers; registers a
handful of simulated Geobox tasks with different scripted fates by queue message; shows their
states live; and exits 0 only if every task ended as scripted and every archived file's checksum
matches what the simulator served.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from rich.console import Console
from rich.live import Live
from rich.table import Table

from taskwarden.config import load_settings
from taskwarden.lifecycle import State
from taskwarden.models import Watch, watch_id
from taskwarden.redis_server import RedisServer
from taskwarden.service import Service
from taskwarden.simulator.geobox import GeoboxTask
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store import Store

DEADLINE = 120.0  # seconds for the whole demo; the scripted tasks need about 12


@dataclass(frozen=True)
class Scenario:
    label: str
    expect: State
    script: dict[str, Any]
    timeout: float | None = None


SCENARIOS = [
    Scenario("ndvi mosaic (file output)", State.SUCCEEDED,
             {"pending_seconds": 1, "running_seconds": 5, "file_name": "ndvi.tif",
              "file_size": 4 * 1024 * 1024, "content_type": "image/tiff"}),
    Scenario("zonal stats (file output)", State.SUCCEEDED,
             {"running_seconds": 2, "file_name": "stats.csv", "file_size": 20_000,
              "content_type": "text/csv"}),
    Scenario("publish roads (layer asset)", State.SUCCEEDED,
             {"running_seconds": 3, "outcome": "success_asset", "asset_kind": "layer"}),
    Scenario("reproject dem (fails)", State.FAILED,
             {"running_seconds": 2, "outcome": "failure",
              "failure_msg": "CRS EPSG:99999 is unknown"}),
    Scenario("tile cache (aborted remotely)", State.CANCELLED,
             {"running_seconds": 3, "outcome": "aborted"}),
    Scenario("global mosaic (never ends)", State.TIMED_OUT,
             {"outcome": "never", "running_seconds": 60}, timeout=8),
]  # fmt: skip


COLOURS = {
    State.SUCCEEDED: "green",
    State.FAILED: "red",
    State.ERROR: "red",
    State.TIMED_OUT: "yellow",
    State.CANCELLED: "magenta",
}


def run_demo(data_dir: str | None = None) -> int:
    """Run the demo; return the process exit code."""
    console = Console()
    settings = load_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    root = Path(data_dir) if data_dir else settings.data_dir / "demo" / stamp
    root.mkdir(parents=True, exist_ok=True)
    archive_dir = root / "archive"
    console.print(f"[bold]taskwarden demo[/] in {root}")

    redis_server = None
    redis_url = os.environ.get("TASKWARDEN_REDIS_URL")
    if not redis_url:
        redis_server = RedisServer(root / "redis").start()
        redis_url = redis_server.url
    try:
        with SimulatorServer() as sim:
            env = {
                "TASKWARDEN_REDIS_URL": redis_url,
                "TASKWARDEN_DATA_DIR": str(root),
                "TASKWARDEN_ARCHIVE_URL": archive_dir.as_uri(),
                "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
                "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "sim-token",
                "TASKWARDEN_DISPATCH_INTERVAL": "0.25",
                "TASKWARDEN_POLL__INITIAL": "0.5",
                "TASKWARDEN_POLL__MAXIMUM": "1.0",
                "TASKWARDEN_LOG_FORMAT": "json",
            }
            console.print(f"simulator at {sim.url}; worker logs in {root / 'logs'}")
            with Service(env, poll_concurrency=2, log_dir=root / "logs") as service:
                store = Store.from_url(redis_url)
                tasks = _register(sim, redis_url)
                ok = _watch(console, store, service, tasks)
                console.print()  # the live table leaves the cursor on its last line
                ok = _verify(console, store, tasks, archive_dir) and ok
                store.redis.close()
    finally:
        if redis_server is not None:
            redis_server.stop()
    console.print(f"archive: {archive_dir}")
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo FAILED[/]")
    return 0 if ok else 1


def _register(sim: SimulatorServer, redis_url: str) -> list[tuple[Scenario, GeoboxTask]]:
    """Script the tasks on the simulator and register each by a plain Celery message."""
    tasks = [(s, sim.geobox.add_task(name=s.label, **s.script)) for s in SCENARIOS]
    producer = Celery(broker=redis_url, set_as_current=False)
    with producer.connection_for_write() as conn:
        for scenario, task in tasks:
            kwargs: dict[str, Any] = {
                "provider": "geobox",
                "remote_id": task.uuid,
                "labels": {"demo": "yes"},
            }
            if scenario.timeout:
                kwargs["timeout"] = scenario.timeout
            producer.send_task("taskwarden.track", kwargs=kwargs, connection=conn)
    return tasks


def _table(rows: list[tuple[Scenario, GeoboxTask, Watch | None]]) -> Table:
    table = Table("task", "remote id", "state", "platform says", "progress", "polls")
    for scenario, task, watch in rows:
        if watch is None:
            table.add_row(scenario.label, task.uuid[:8], "(registering)", "", "", "")
            continue
        pct = watch.progress or 0.0
        bar = "█" * round(pct * 20) + "·" * (20 - round(pct * 20))
        colour = COLOURS.get(watch.state, "cyan")
        table.add_row(
            scenario.label,
            task.uuid[:8],
            f"[{colour}]{watch.state}[/]",
            watch.raw_status or "",
            f"{bar} {pct * 100:3.0f}%",
            str(watch.polls),
        )
    return table


def _watch(
    console: Console, store: Store, service: Service, tasks: list[tuple[Scenario, GeoboxTask]]
) -> bool:
    """Show the live table until every watch is final; False on a stall or a dead process."""
    ids = [watch_id("geobox", task.uuid) for _, task in tasks]
    deadline = time.monotonic() + DEADLINE
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            watches = store.get_many(ids)
            live.update(_table([(s, t, w) for (s, t), w in zip(tasks, watches, strict=True)]))
            if all(w is not None and w.state.final for w in watches):
                return True
            if not service.alive():
                console.print("[red]a taskwarden process died; see the logs[/]")
                return False
            if time.monotonic() > deadline:
                console.print(f"[red]not every task ended within {DEADLINE:.0f}s[/]")
                return False
            time.sleep(0.125)


def _verify(
    console: Console, store: Store, tasks: list[tuple[Scenario, GeoboxTask]], archive_dir: Path
) -> bool:
    """Every watch ended as scripted; every archived file matches the simulator's bytes."""
    ok = True
    for scenario, task in tasks:
        watch = store.get(watch_id("geobox", task.uuid))
        state = watch.state if watch else None
        problems = []
        if state is not scenario.expect:
            problems.append(f"ended {state}, expected {scenario.expect}")
        if scenario.expect is State.SUCCEEDED:
            problems += _check_archive(archive_dir / "geobox" / task.uuid, task, scenario)
        ok = ok and not problems
        mark = "[green]ok[/]" if not problems else "[red]" + "; ".join(problems) + "[/]"
        console.print(f"  {scenario.label:<32} {state!s:<10} {mark}")
    return ok


def _check_archive(folder: Path, task: GeoboxTask, scenario: Scenario) -> list[str]:
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return [f"no manifest at {manifest_path}"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for out in manifest["outputs"]:
        path = folder / out["name"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        if digest != out["sha256"]:
            problems.append(f"{out['name']}: archived bytes do not match the manifest")
    if "file_name" in scenario.script:
        served = {o["name"]: o["sha256"] for o in manifest["outputs"]}.get(
            scenario.script["file_name"]
        )
        if served != task.sha256:
            problems.append("archived file differs from what the platform served")
    return problems
