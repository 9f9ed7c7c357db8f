"""Crash safety on real processes: a worker killed with SIGKILL mid-job loses nothing, and no
partial object ever appears under an output's final key."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden, wait_for

# these start their own wardens and break them on purpose: slower than most, above all on a
# loaded machine
pytestmark = pytest.mark.timeout(300)

FAST_LEASES = {
    "TASKWARDEN_ARCHIVE_LEASE_SECONDS": "5",
    "TASKWARDEN_LEASE_SECONDS": "3",
    "TASKWARDEN_POLL__CHECK_DEADLINE": "2.5",
}


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def kill_busy_child(w: Warden, role: str) -> int:
    """SIGKILL the prefork child of the ``role`` worker (the one running the job)."""
    main = w.service.processes[list(w.service.argvs).index(role)].pid
    kids = wait_for(lambda: children(main), timeout=10)
    # with one child per worker (concurrency 1 in these tests) the busy one is the only one
    os.kill(kids[0], signal.SIGKILL)
    return kids[0]


def test_worker_killed_mid_download_archives_exactly_once(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """The archive job of a worker killed while downloading is redelivered and completes; the
    archive holds the output once, with the platform's checksum, and nothing else."""
    task = sim.geobox.add_task(running_seconds=0.3, file_name="scene.tif", file_size=400_000)
    # the first download waits long enough for us to kill the worker in the middle of it
    sim.inject(kind="delay", delay=4, task=task.uuid, route="files/{uuid}/download/", count=1)
    with running_warden(tmp_path, sim, processes=1, **FAST_LEASES) as w:
        w.send_track(provider="geobox", remote_id=task.uuid)
        wid = watch_id("geobox", task.uuid)
        wait_for(
            lambda: sim.stats.count(route="files/{uuid}/download/", task=task.uuid) >= 1, 30, 0.02
        )
        kill_busy_child(w, "archive")
        watch = w.wait_final(wid, timeout=60)
        assert watch.state is State.SUCCEEDED, watch.last_error
        folder = w.archive_dir / "geobox" / task.uuid  # type: ignore[operator]
        assert hashlib.sha256((folder / "scene.tif").read_bytes()).hexdigest() == task.sha256
        manifest = json.loads((folder / "manifest.json").read_text())
        assert {o["name"] for o in manifest["outputs"]} == {
            "task.json",
            "file_info.json",
            "scene.tif",
        }
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["task.json", "file_info.json", "scene.tif", "manifest.json"]
        )  # no staging leftovers, no duplicate under another name
        assert sim.stats.count(route="files/{uuid}/download/", task=task.uuid) >= 2
    assert "WorkerLostError" in (tmp_path / "logs" / "archive.log").read_text()  # killed mid-job


def test_worker_killed_mid_upload_leaves_no_staging_file(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """Killed once the body is flowing (the local store's staging file ``<key>#<n>`` exists):
    the next run sweeps the leftover, so the folder holds the archive and nothing else. Found
    by bench/chaos.py, which counted the leftover as a second copy."""
    task = sim.geobox.add_task(running_seconds=0.3, file_name="scene.tif", file_size=3_000_000)
    route = "files/{uuid}/download/"
    sim.inject(kind="stall", keep_bytes=2_000_000, delay=30, task=task.uuid, route=route, count=1)
    with running_warden(tmp_path, sim, processes=1, **FAST_LEASES) as w:
        w.send_track(provider="geobox", remote_id=task.uuid)
        folder = w.archive_dir / "geobox" / task.uuid  # type: ignore[operator]
        wait_for(lambda: folder.is_dir() and any("#" in p.name for p in folder.iterdir()), 30)
        kill_busy_child(w, "archive")
        watch = w.wait_final(watch_id("geobox", task.uuid), timeout=60)
        assert watch.state is State.SUCCEEDED, watch.last_error
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["task.json", "file_info.json", "scene.tif", "manifest.json"]
        )
        assert hashlib.sha256((folder / "scene.tif").read_bytes()).hexdigest() == task.sha256


def test_worker_killed_mid_poll_batch_loses_no_watch(tmp_path: Path, sim: SimulatorServer) -> None:
    """Watches whose poll batch died with its worker are checked again and all finish."""
    tasks = sim.geobox.add_tasks([{"running_seconds": 1, "file_size": 10} for _ in range(20)])
    # every status answer is slow for a while, so the kill lands inside a batch
    fault = sim.inject(kind="delay", delay=2, route="tasks/{uuid}/", count=20)
    with running_warden(tmp_path, sim, processes=1, **FAST_LEASES) as w:
        for task in tasks:
            w.send_track(provider="geobox", remote_id=task.uuid)
        wait_for(lambda: sum(sim.stats.count(task=t.uuid) for t in tasks) >= 1, 30, 0.02)
        kill_busy_child(w, "poll")
        for task in tasks:
            watch = w.wait_final(watch_id("geobox", task.uuid), timeout=90)
            assert watch.state is State.SUCCEEDED, watch.last_error
    sim.faults.remove(fault)
    assert "WorkerLostError" in (tmp_path / "logs" / "poll.log").read_text()  # killed mid-batch


def test_redis_restart_under_load_loses_no_watch(tmp_path: Path, sim: SimulatorServer) -> None:
    """Redis (append-only) restarted while 40 watches are being polled and archived: every
    watch is still there afterwards and reaches its final state, archived once."""
    tasks = sim.geobox.add_tasks([{"running_seconds": 3, "file_size": 2000} for _ in range(40)])
    with running_warden(tmp_path, sim, persist=True, **FAST_LEASES) as w:
        for task in tasks[:20]:
            w.send_track(provider="geobox", remote_id=task.uuid)
        wait_for(lambda: sum(sim.stats.count(task=t.uuid) for t in tasks[:20]) >= 20, 30, 0.02)
        w.redis_server.stop()  # SIGTERM: Redis flushes its append-only file and exits
        w.redis_server.start()  # same port, password and directory: it reloads the file
        for task in tasks[20:]:  # and registrations keep coming
            w.send_track(provider="geobox", remote_id=task.uuid)
        for task in tasks:
            watch = w.wait_final(watch_id("geobox", task.uuid), timeout=120)
            assert watch.state is State.SUCCEEDED, (task.uuid, watch.last_error)
        assert w.store.redis.zcard("taskwarden:watches") == 40
    for task in tasks:
        assert sim.stats.count(route="files/{uuid}/download/", task=task.uuid) == 1
        manifest = tmp_path / "archive" / "geobox" / task.uuid / "manifest.json"
        assert json.loads(manifest.read_text())["remote_id"] == task.uuid


def test_a_registration_reaching_a_worker_as_it_is_killed_is_not_lost(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """The control worker's main process (registrations' consumer) frozen while a registration
    message arrives, then killed: the instant in which Celery's stock Redis transport loses a
    message (it is off the queue and not yet recorded; tests/test_broker.py). taskwarden's transport keeps it: the restarted
    worker registers it and the task is followed to its end."""
    warm_up, task = sim.geobox.add_tasks([{"running_seconds": 0.5, "file_size": 10}] * 2)
    with running_warden(tmp_path, sim, processes=1) as w:
        w.send_track(provider="geobox", remote_id=warm_up.uuid)  # the worker is up and idle
        assert w.wait_final(watch_id("geobox", warm_up.uuid), timeout=60).state is State.SUCCEEDED
        main = w.service.processes[list(w.service.argvs).index("control")].pid
        os.kill(main, signal.SIGSTOP)
        w.send_track(provider="geobox", remote_id=task.uuid)
        time.sleep(0.5)  # a pending fetch would have been answered by now
        os.kill(main, signal.SIGKILL)
        wait_for(lambda: w.service.restarts.get("control", 0) >= 1, timeout=10)
        assert w.wait_final(watch_id("geobox", task.uuid), timeout=90).state is State.SUCCEEDED


def test_a_dead_process_is_started_again(tmp_path: Path, sim: SimulatorServer) -> None:
    """The beat scheduler and the poll worker, killed outright, are restarted by the supervisor
    and watches registered afterwards still finish."""
    task = sim.geobox.add_task(running_seconds=0.5, file_size=10)
    with running_warden(tmp_path, sim, processes=1) as w:
        for role in ("beat", "poll"):
            os.kill(w.service.processes[list(w.service.argvs).index(role)].pid, signal.SIGKILL)
        wait_for(lambda: w.service.restarts == {"beat": 1, "poll": 1}, timeout=10)
        assert w.service.alive()
        w.send_track(provider="geobox", remote_id=task.uuid)
        assert w.wait_final(watch_id("geobox", task.uuid), timeout=60).state is State.SUCCEEDED


def test_duplicate_archive_delivery_makes_one_archive(tmp_path: Path, sim: SimulatorServer) -> None:
    """A second delivery of an archive job while the first still runs (an at-least-once
    redelivery) starts no second download, and leaves one manifest, one set of outputs and
    one 'archived' step in the history."""
    from celery import Celery

    task = sim.geobox.add_task(running_seconds=0.3, file_name="a.bin", file_size=50_000)
    sim.inject(kind="delay", delay=2, task=task.uuid, route="files/{uuid}/download/", count=2)
    with running_warden(tmp_path, sim) as w:
        wid = watch_id("geobox", task.uuid)
        w.send_track(provider="geobox", remote_id=task.uuid)
        archiving = wait_for(
            lambda: (x := w.store.get(wid)) is not None and x.state is State.ARCHIVING and x,
            30,
            0.02,
        )
        producer = Celery(broker=w.redis_url, set_as_current=False)
        producer.send_task(
            "taskwarden.archive", args=[wid, archiving.fence], queue="taskwarden.archive"
        )
        watch = w.wait_final(wid, timeout=60)
        time.sleep(3)  # a late duplicate would have finished by now, and must change nothing
        history = w.store.history(wid)
        final = w.store.get(wid)
    assert watch.state is State.SUCCEEDED and final is not None and final.state is State.SUCCEEDED
    assert [h["note"] for h in history].count("archived 3 outputs") == 1
    folder = tmp_path / "archive" / "geobox" / task.uuid
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.bin",
        "file_info.json",
        "manifest.json",
        "task.json",
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {o["name"]: o["sha256"] for o in manifest["outputs"]}["a.bin"] == task.sha256
    assert sim.stats.count(route="files/{uuid}/download/", task=task.uuid) == 1
    assert '"event": "archive.busy"' in (tmp_path / "logs" / "archive.log").read_text()


def test_sigterm_mid_batch_leaves_nothing_claimed(tmp_path: Path, sim: SimulatorServer) -> None:
    """A poll worker told to stop while a slow batch runs finishes or hands it back: every watch
    still ends, and no lease outlives the run."""
    tasks = sim.geobox.add_tasks([{"running_seconds": 1, "file_size": 10} for _ in range(10)])
    fault = sim.inject(kind="delay", delay=1.5, route="tasks/{uuid}/", count=10)
    with running_warden(tmp_path, sim, processes=1, **FAST_LEASES) as w:
        for task in tasks:
            w.send_track(provider="geobox", remote_id=task.uuid)
        wait_for(lambda: sum(sim.stats.count(task=t.uuid) for t in tasks) >= 1, 30, 0.02)
        poll = w.service.processes[list(w.service.argvs).index("poll")]
        poll.send_signal(signal.SIGTERM)
        assert poll.wait(30) == 0  # a warm shutdown: the running batch was finished first
        for task in tasks:
            assert w.wait_final(watch_id("geobox", task.uuid), timeout=60).state is State.SUCCEEDED
        assert w.store.redis.zcard("taskwarden:leases") == 0
    sim.faults.remove(fault)
    assert "Warm shutdown" in (tmp_path / "logs" / "poll.log").read_text()
