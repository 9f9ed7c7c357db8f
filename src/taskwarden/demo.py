"""``taskwarden demo``: the whole service against the simulator, checked end to end.

It starts a private Redis, the simulator, the beat scheduler and the workers; registers a
handful of simulated tasks on every platform, with different scripted fates, by queue message;
shows their states live; and exits 0 only if every task ended as scripted and every archived
file's checksum matches what the simulator served.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from rich.console import Console
from rich.live import Live
from rich.table import Table

from taskwarden.config import load_settings
from taskwarden.config.redis_url import celery_broker
from taskwarden.lifecycle import State
from taskwarden.models import Watch, watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store import Store

DEADLINE = 120.0  # seconds for the whole demo; the scripted tasks need about 12


@dataclass(frozen=True)
class Scripted:
    """A task scripted on the simulator: how to register it, and the checksums the platform
    will have served for its outputs (by archive name), where the simulator knows them."""

    remote_id: str
    params: dict[str, Any]
    checksums: dict[str, str]


@dataclass(frozen=True)
class Scenario:
    label: str
    provider: str
    expect: State
    make: Callable[[SimulatorServer], Scripted]
    timeout: float | None = None


def _geobox(**script: Any) -> Callable[[SimulatorServer], Scripted]:
    def make(sim: SimulatorServer) -> Scripted:
        task = sim.geobox.add_task(**script)
        files = {script["file_name"]: task.sha256} if "file_name" in script else {}
        return Scripted(task.uuid, {}, files)

    return make


def _dl_export(sim: SimulatorServer) -> Scripted:
    export = sim.descarteslabs.add_export(product_id="sim:roads", features=300, running_seconds=4)
    reg = export.registration
    files = {"export.geojson": export.sha256, "export.log": export.log_sha256}
    return Scripted(reg["remote_id"], reg["params"], files)


def _dl_copy(**fields: Any) -> Callable[[SimulatorServer], Scripted]:
    def make(sim: SimulatorServer) -> Scripted:
        reg = sim.descarteslabs.add_copy_job(**fields).registration
        return Scripted(reg["remote_id"], reg["params"], {})

    return make


def _earthone_job(**fields: Any) -> Callable[[SimulatorServer], Scripted]:
    def make(sim: SimulatorServer) -> Scripted:
        job = sim.earthone.add_job(**fields)
        files = {"result": job.result_sha256} if fields.get("outcome") is None else {}
        return Scripted(job.registration["remote_id"], {}, files)

    return make


def _earthone_function(sim: SimulatorServer) -> Scripted:
    script = {"pending_seconds": 0.5, "running_seconds": 1, "file_size": 256}
    function = sim.earthone.add_function(jobs=40, stagger=0.1, failures=1, job=script)
    first = function.jobs[0]
    files = {f"{first}/result": sim.earthone.jobs[first].result_sha256}
    return Scripted(function.registration["remote_id"], {}, files)


def _up42_job(**fields: Any) -> Callable[[SimulatorServer], Scripted]:
    def make(sim: SimulatorServer) -> Scripted:
        job = sim.up42.add_job(**fields)
        files = {name.replace("/", "__"): sha for name, sha in job.results.results_sha256.items()}
        return Scripted(job.id, {"project_id": job.spec.project_id}, files)

    return make


def _up42_processing(sim: SimulatorServer) -> Scripted:
    job = sim.up42.add_processing(running_seconds=3, settle_seconds=None)
    return Scripted(job.id, {"kind": "processing"}, {})


def _isahit_batch(sim: SimulatorServer) -> Scripted:
    batch = sim.isahit.add_batch(5, stagger=0.5, pending_seconds=1, running_seconds=2)
    # all 5 final ends it at once; without the count it would settle 300 s (more may come)
    params = {"project_id": batch.project_id, "kind": "batch", "expected_tasks": 5}
    return Scripted(batch.batch_id, params, {})


def _isahit_task(sim: SimulatorServer) -> Scripted:
    task = sim.isahit.add_task(pending_seconds=1, running_seconds=3)
    return Scripted(task.task_id, {"project_id": task.script.project_id}, {})


def _generic(**fields: Any) -> Callable[[SimulatorServer], Scripted]:
    def make(sim: SimulatorServer) -> Scripted:
        job = sim.generic.add_task(**fields)
        return Scripted(f"acme:{job.id}", {"project": "demo"}, dict(job.checksums))

    return make


MiB = 1024 * 1024
SCENARIOS = [
    Scenario("ndvi mosaic (file)", "geobox", State.SUCCEEDED,
             _geobox(pending_seconds=1, running_seconds=5, file_name="ndvi.tif",
                     file_size=4 * MiB, content_type="image/tiff")),
    Scenario("publish roads (layer)", "geobox", State.SUCCEEDED,
             _geobox(running_seconds=3, outcome="success_asset", asset_kind="layer")),
    Scenario("reproject dem (fails)", "geobox", State.FAILED,
             _geobox(running_seconds=2, outcome="failure", failure_msg="CRS 99999 unknown")),
    Scenario("tile cache (aborted remotely)", "geobox", State.CANCELLED,
             _geobox(running_seconds=3, outcome="aborted")),
    Scenario("global mosaic (never ends)", "geobox", State.TIMED_OUT,
             _geobox(outcome="never", running_seconds=60), timeout=8),
    Scenario("roads export (GeoJSON)", "descarteslabs", State.SUCCEEDED, _dl_export),
    Scenario("product copy", "descarteslabs", State.SUCCEEDED, _dl_copy(running_seconds=3)),
    Scenario("copy DONE with errors", "descarteslabs", State.FAILED,
             _dl_copy(running_seconds=2, errors=["feature 17: invalid geometry"])),
    Scenario("compute job (result)", "earthone", State.SUCCEEDED,
             _earthone_job(pending_seconds=1, running_seconds=3, file_size=2 * MiB)),
    Scenario("compute job (traceback)", "earthone", State.FAILED,
             _earthone_job(running_seconds=2, outcome="failure",
                           error_reason="ValueError: no scenes in the AOI")),
    Scenario("function of 40 jobs", "earthone", State.SUCCEEDED, _earthone_function),
    Scenario("NDVI workflow (tarball)", "up42", State.SUCCEEDED,
             _up42_job(pending_seconds=1, running_seconds=4)),
    Scenario("workflow cancelled", "up42", State.CANCELLED,
             _up42_job(running_seconds=2, outcome="aborted", cancelling_seconds=1)),
    Scenario("processing job (v2)", "up42", State.SUCCEEDED, _up42_processing),
    Scenario("annotation batch (5)", "isahit", State.SUCCEEDED, _isahit_batch),
    Scenario("annotation task", "isahit", State.SUCCEEDED, _isahit_task),
    Scenario("acme scene (2 files)", "http", State.SUCCEEDED,
             _generic(running_seconds=3, file_name="scene.tif", file_size=200_000,
                      extra_outputs=[{"name": "report.csv", "size": 300}])),
    Scenario("acme job (fails)", "http", State.FAILED,
             _generic(running_seconds=1, outcome="failure", failure_message="no band 4")),
]  # fmt: skip


def provider_env(sim: SimulatorServer) -> dict[str, str]:
    """Every provider's settings, pointed at the simulator and its demo credentials."""
    from taskwarden.simulator.generic import profile

    return {
        # the simulator is on loopback, where platform-given URLs may not lead by default
        "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "true",
        "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "sim-token",
        **sim.descarteslabs.env(sim.url),
        **sim.earthone.env(sim.url),
        "TASKWARDEN_PROVIDERS__UP42__BASE_URL": sim.up42_url,
        "TASKWARDEN_PROVIDERS__UP42__USERNAME": "sim-user",
        "TASKWARDEN_PROVIDERS__UP42__PASSWORD": "sim-password",
        "TASKWARDEN_PROVIDERS__ISAHIT__BASE_URL": sim.isahit_url,
        "TASKWARDEN_PROVIDERS__ISAHIT__ACCESS_ID": "sim-access-id",
        "TASKWARDEN_PROVIDERS__ISAHIT__SECRET_KEY": "sim-secret-key",
        "TASKWARDEN_PROVIDERS__HTTP__PROFILES": json.dumps({"acme": profile(sim.generic_url)}),
    }


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
                "TASKWARDEN_DISPATCH_INTERVAL": "0.25",
                "TASKWARDEN_POLL__INITIAL": "0.5",
                "TASKWARDEN_POLL__MAXIMUM": "1.0",
                "TASKWARDEN_LOG_FORMAT": "json",
                **provider_env(sim),
            }
            console.print(f"simulator at {sim.url}; worker logs in {root / 'logs'}")
            with Service(env, poll_concurrency=2, log_dir=root / "logs") as service:
                store = Store.from_url(redis_url)
                tasks = _register(sim, redis_url)
                ok = _watch(console, store, service, tasks)
                console.print()  # the live table leaves the cursor on its last line
                ok = _verify(console, store, tasks, archive_dir) and ok
                store.close()
    finally:
        if redis_server is not None:
            redis_server.stop()
    console.print(f"archive: {archive_dir}")
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo FAILED[/]")
    return 0 if ok else 1


Registered = list[tuple[Scenario, Scripted]]


def _register(sim: SimulatorServer, redis_url: str) -> Registered:
    """Script the tasks on the simulator and register each by a plain Celery message."""
    tasks = [(s, s.make(sim)) for s in SCENARIOS]
    broker, transport_options = celery_broker(redis_url)
    producer = Celery(broker=broker, set_as_current=False)
    producer.conf.broker_transport_options = transport_options
    with producer.connection_for_write() as conn:
        for scenario, scripted in tasks:
            kwargs: dict[str, Any] = {
                "provider": scenario.provider,
                "remote_id": scripted.remote_id,
                "params": scripted.params,
                "labels": {"demo": "yes"},
            }
            if scenario.timeout:
                kwargs["timeout"] = scenario.timeout
            producer.send_task("taskwarden.track", kwargs=kwargs, connection=conn)
    return tasks


def _ids(tasks: Registered) -> list[str]:
    return [watch_id(s.provider, t.remote_id) for s, t in tasks]


def _table(tasks: Registered, watches: list[Watch | None]) -> Table:
    table = Table("platform", "task", "state", "platform says", "progress", "polls")
    for (scenario, _), watch in zip(tasks, watches, strict=True):
        if watch is None:
            table.add_row(scenario.provider, scenario.label, "(registering)", "", "", "")
            continue
        pct = watch.progress or 0.0
        bar = "█" * round(pct * 16) + "·" * (16 - round(pct * 16))
        colour = COLOURS.get(watch.state, "cyan")
        table.add_row(
            scenario.provider,
            scenario.label,
            f"[{colour}]{watch.state}[/]",
            (watch.raw_status or "")[:24],
            f"{bar} {pct * 100:3.0f}%",
            str(watch.polls),
        )
    return table


def _watch(console: Console, store: Store, service: Service, tasks: Registered) -> bool:
    """Show the live table until every watch is final; False on a stall or a dead process."""
    ids = _ids(tasks)
    deadline = time.monotonic() + DEADLINE
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            watches = store.get_many(ids)
            live.update(_table(tasks, watches))
            if all(w is not None and w.state.final for w in watches):
                return True
            if not service.alive():
                console.print("[red]a taskwarden process keeps dying; see the logs[/]")
                return False
            if time.monotonic() > deadline:
                console.print(f"[red]not every task ended within {DEADLINE:.0f}s[/]")
                return False
            time.sleep(0.125)


def _verify(console: Console, store: Store, tasks: Registered, archive_dir: Path) -> bool:
    """Every watch ended as scripted; every archived output matches its manifest, and the
    checksums the platform served where the simulator knows them."""
    ok = True
    for (scenario, scripted), wid in zip(tasks, _ids(tasks), strict=True):
        watch = store.get(wid)
        state = watch.state if watch else None
        problems = []
        if state is not scenario.expect:
            why = f" ({watch.last_error})" if watch and watch.last_error else ""
            problems.append(f"ended {state}, expected {scenario.expect}{why}")
        elif state is State.SUCCEEDED:
            folder = archive_dir / scenario.provider / scripted.remote_id
            problems += _check_archive(folder, scripted)
        ok = ok and not problems
        mark = "[green]ok[/]" if not problems else "[red]" + "; ".join(problems) + "[/]"
        console.print(f"  {scenario.provider:<14} {scenario.label:<30} {state!s:<10} {mark}")
    return ok


def _check_archive(folder: Path, scripted: Scripted) -> list[str]:
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
    archived = {o["name"]: o["sha256"] for o in manifest["outputs"]}
    for name, served in scripted.checksums.items():
        if archived.get(name) != served:
            problems.append(f"{name}: not what the platform served")
    return problems
