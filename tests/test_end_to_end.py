"""taskwarden end to end: registration by queue message and CLI, real beat and worker processes,
the Geobox simulator on loopback, outputs in a real archive. Assertions are on what a user sees."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from celery import Celery

from taskwarden.lifecycle import State
from taskwarden.models import Registration, watch_id
from taskwarden.processes import Service
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store

from .conftest import Warden, running_warden, wait_for


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_events(w: Warden, role: str) -> list[dict[str, Any]]:
    """The JSON log lines of one process (Celery's own plain lines are skipped)."""
    events = []
    for line in (w.service.log_dir / f"{role}.log").read_text().splitlines():  # type: ignore[operator]
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def watch_log(w: Warden, role: str, wid: str, event: str, count: int = 1) -> list[dict[str, Any]]:
    """One watch's log lines of one process, once `count` lines of `event` are written: a worker
    logs its summary line after the commit that the test saw, so the line may trail by a moment."""

    def ready() -> list[dict[str, Any]] | None:
        mine = [e for e in log_events(w, role) if e.get("watch_id") == wid]
        return mine if [e["event"] for e in mine].count(event) >= count else None

    return wait_for(ready, 10)


def watch_bytes(watch: Any) -> int:
    return sum(o["size"] for o in watch.outputs)


def status_gets(w: Warden, task: str) -> int:
    return w.sim.stats.count(route="tasks/{uuid}/", task=task, method="GET")


def test_message_registration_runs_to_success_and_archives(warden: Warden) -> None:
    """A task registered by Celery message is followed through progress to an archived output
    whose bytes and manifest match what the platform served."""
    task = warden.sim.geobox.add_task(
        pending_seconds=0.5, running_seconds=3, file_name="scene.tif", file_size=300_000
    )
    warden.send_track(provider="geobox", remote_id=task.uuid, labels={"team": "maps"})
    wid = watch_id("geobox", task.uuid)
    watch, seen = warden.follow(wid)
    assert (watch.state, watch.raw_status, watch.labels) == (
        State.SUCCEEDED,
        "SUCCESS",
        {"team": "maps"},
    )
    assert len([p for p in seen if 0 < p < 1]) >= 2, f"progress seen along the way: {seen}"

    folder = warden.archive_dir / "geobox" / task.uuid  # type: ignore[operator]
    assert sha256(folder / "scene.tif") == task.sha256
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["watch_id"], manifest["provider"], manifest["remote_id"]) == (
        wid,
        "geobox",
        task.uuid,
    )
    assert manifest["final_status"] == "SUCCESS"
    by_name = {o["name"]: o for o in manifest["outputs"]}
    assert by_name["scene.tif"]["sha256"] == task.sha256
    assert by_name["scene.tif"]["size"] == 300_000
    assert {o["sha256"] for o in watch.outputs} == {o["sha256"] for o in manifest["outputs"]}

    # every status check committed once (plus the archive's read of the final document);
    # progress was asked only while the task ran
    assert status_gets(warden, task.uuid) == watch.polls + 1
    progress_gets = warden.sim.stats.count(route="tasks/{uuid}/status/", task=task.uuid)
    assert 0 < progress_gets < watch.polls
    assert warden.sim.stats.count(route="files/{uuid}/download/", task=task.uuid) == 1
    # one structured summary line for the registration (on the control worker), per poll, and
    # for the archive
    registered = watch_log(warden, "control", wid, "track.done")
    assert [e["event"] for e in registered] == ["track.done"]
    mine = watch_log(warden, "poll", wid, "poll.done", count=watch.polls)
    polls = [e for e in mine if e["event"].startswith("poll.")]
    assert [e["event"] for e in polls] == ["poll.done"] * watch.polls
    assert {"duration_ms", "raw_status", "state", "outcome"} <= polls[-1].keys()
    archived = watch_log(warden, "archive", wid, "archive.done")
    assert [(e["event"], e["bytes"]) for e in archived] == [("archive.done", watch_bytes(watch))]

    transitions = [(h["from"], h["to"]) for h in warden.store.history(wid)]
    assert transitions == [
        (None, "pending"), ("pending", "running"), ("running", "archiving"), ("archiving", "succeeded")
    ]  # fmt: skip


def test_duplicate_registrations_make_one_watch_and_one_archive(warden: Warden) -> None:
    """The same task sent five times is one watch, downloaded and archived once."""
    task = warden.sim.geobox.add_task(running_seconds=1, file_size=50_000)
    for _ in range(5):
        warden.send_track(provider="geobox", remote_id=task.uuid)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert watch.state is State.SUCCEEDED
    assert warden.store.redis.zcount("taskwarden:watches", "-inf", "+inf") >= 1
    assert [w.id for w in warden.store.list_watches(provider="geobox", limit=10_000)[0]].count(
        watch.id
    ) == 1
    assert warden.sim.stats.count(route="files/{uuid}/download/", task=task.uuid) == 1


def test_remote_failure_records_platform_message(warden: Warden) -> None:
    """A task the platform fails ends `failed` with the platform's own message."""
    task = warden.sim.geobox.add_task(
        running_seconds=0.5, outcome="failure", failure_msg="bad band math"
    )
    warden.send_track(provider="geobox", remote_id=task.uuid)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert (watch.state, watch.raw_status) == (State.FAILED, "FAILURE")
    assert watch.last_error is not None and "bad band math" in watch.last_error


def test_remote_abort_ends_cancelled(warden: Warden) -> None:
    """A task aborted on the platform's side ends `cancelled` with status ABORTED."""
    task = warden.sim.geobox.add_task(running_seconds=1, outcome="aborted")
    warden.send_track(provider="geobox", remote_id=task.uuid)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert (watch.state, watch.raw_status) == (State.CANCELLED, "ABORTED")


def test_non_file_asset_is_archived_as_its_description(warden: Warden) -> None:
    """A task whose result is a layer archives the task and layer documents as JSON."""
    task = warden.sim.geobox.add_task(
        running_seconds=0.5, outcome="success_asset", asset_kind="layer"
    )
    warden.send_track(provider="geobox", remote_id=task.uuid)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert watch.state is State.SUCCEEDED
    folder = warden.archive_dir / "geobox" / task.uuid  # type: ignore[operator]
    manifest = json.loads((folder / "manifest.json").read_text())
    for out in manifest["outputs"]:
        data = (folder / out["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == out["sha256"]
        assert out["name"].endswith(".json")
        json.loads(data)
    assert len(manifest["outputs"]) >= 2


def test_a_raster_is_archived_with_its_bytes(warden: Warden) -> None:
    """A raster result archives its description and its bytes from rasters/{u}/download/,
    named by the platform, checksum in the manifest."""
    task = warden.sim.geobox.add_task(
        running_seconds=0.5, outcome="success_asset", asset_kind="raster",
        file_name="elevation.tif", file_size=150_000,
    )  # fmt: skip
    warden.send_track(provider="geobox", remote_id=task.uuid)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert watch.state is State.SUCCEEDED, watch.last_error
    folder = warden.archive_dir / "geobox" / task.uuid  # type: ignore[operator]
    assert sha256(folder / "elevation.tif") == task.sha256
    manifest = json.loads((folder / "manifest.json").read_text())
    names = {o["name"]: o["sha256"] for o in manifest["outputs"]}
    assert set(names) == {"task.json", "raster.json", "elevation.tif"}
    assert names["elevation.tif"] == task.sha256


def test_a_password_login_warden_renews_and_archives_a_model(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """With USERNAME and PASSWORD (no token) the warden logs in, logs in again as 3-second
    tokens run out, and archives a 3D model's .glb bytes from 3dmodels/{u}/content/."""
    sim.geobox.configure({"token_ttl": 3})
    password = {
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "",
        "TASKWARDEN_PROVIDERS__GEOBOX__USERNAME": "sim-user",
        "TASKWARDEN_PROVIDERS__GEOBOX__PASSWORD": "sim-password",
    }
    try:
        with running_warden(tmp_path, sim, processes=1, **password) as w:
            logins = sim.stats.count(platform="geobox", route="auth/token/")
            task = sim.geobox.add_task(
                name="tower", running_seconds=6, outcome="success_asset", asset_kind="model",
                file_size=40_000,
            )  # fmt: skip
            w.send_track(provider="geobox", remote_id=task.uuid)
            watch = w.wait_final(watch_id("geobox", task.uuid))
            assert (watch.state, watch.last_error) == (State.SUCCEEDED, None)
            assert sim.stats.count(platform="geobox", route="auth/token/") - logins >= 2
    finally:
        sim.geobox.configure({"token_ttl": None})
    folder = tmp_path / "archive" / "geobox" / task.uuid
    assert sha256(folder / "tower model.glb") == task.sha256


def test_remote_404_ends_in_error_without_hammering(warden: Warden) -> None:
    """A task the platform does not know ends in `error` after a single request."""
    missing = str(uuid.uuid4())
    warden.send_track(provider="geobox", remote_id=missing)
    watch = warden.wait_final(watch_id("geobox", missing))
    assert watch.state is State.ERROR
    assert watch.last_error is not None and "not found" in watch.last_error.lower()
    time.sleep(0.5)
    assert status_gets(warden, missing) == 1


def test_timeout_ends_timed_out(warden: Warden) -> None:
    """A task still running at the watch's timeout ends `timed_out`, and polling stops."""
    task = warden.sim.geobox.add_task(outcome="never")
    warden.send_track(provider="geobox", remote_id=task.uuid, timeout=1.5)
    started = time.monotonic()
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert (watch.state, watch.raw_status) == (State.TIMED_OUT, "PROGRESS")
    assert time.monotonic() - started < 10
    count = status_gets(warden, task.uuid)
    time.sleep(1)
    assert status_gets(warden, task.uuid) == count
    assert warden.sim.geobox.state(task.uuid) == "PROGRESS"  # not aborted unless asked


def test_abort_on_timeout_aborts_the_remote_task(warden: Warden) -> None:
    """With abort_on_timeout, a watch that times out also aborts the task on the platform."""
    task = warden.sim.geobox.add_task(outcome="never")
    warden.send_track(provider="geobox", remote_id=task.uuid, timeout=1.0, abort_on_timeout=True)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert watch.state is State.TIMED_OUT
    wait_for(lambda: warden.sim.geobox.state(task.uuid) == "ABORTED", timeout=15)
    wait_for(
        lambda: "abort sent to the platform" in [h["note"] for h in warden.store.history(watch.id)]
    )


def test_unknown_status_word_keeps_polling(warden: Warden) -> None:
    """An unknown status word is recorded raw and noted, and the watch still finishes."""
    task = warden.sim.geobox.add_task(running_seconds=2, file_size=10)
    warden.sim.inject(kind="unknown_status", task=task.uuid, word="REVOKED", count=2)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert watch.state is State.SUCCEEDED
    notes = [h["note"] or "" for h in warden.store.history(watch.id)]
    assert any("unknown status word 'REVOKED'" in n for n in notes)


def test_progress_is_tracked_through_the_real_path(warden: Warden) -> None:
    """A task reporting progress leaves its track on the watch (when the value was seen, the
    rate it moves at), which the next decision schedules by; the watch still finishes."""
    task = warden.sim.geobox.add_task(pending_seconds=0, running_seconds=4, file_size=10)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    wid = watch_id("geobox", task.uuid)

    def tracked() -> Any:
        w = warden.store.get(wid)
        return w if w is not None and w.progress_rate is not None else None

    moving = wait_for(tracked, 30)
    assert moving.progress_rate > 0 and moving.progress_at is not None
    assert moving.progress_at <= moving.updated_at
    watch = warden.wait_final(wid)
    assert watch.state is State.SUCCEEDED and watch.progress == 1.0


def test_transient_errors_are_retried(warden: Warden) -> None:
    """A burst of 503s and a reset on the status route delay the watch but do not end it."""
    task = warden.sim.geobox.add_task(running_seconds=1, file_size=10)
    warden.sim.inject(kind="status", status=503, task=task.uuid, route="tasks/{uuid}/", count=3)
    warden.sim.inject(kind="reset", task=task.uuid, route="tasks/{uuid}/", count=1)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    watch = warden.wait_final(watch_id("geobox", task.uuid))
    assert watch.state is State.SUCCEEDED
    assert status_gets(warden, task.uuid) >= 5


def test_invalid_message_is_refused_and_worker_keeps_serving(warden: Warden) -> None:
    """Malformed registrations create nothing, and a good one sent after them still works."""
    before = warden.store.redis.zcard("taskwarden:watches")
    warden.send_track(provider="nope", remote_id="x")
    warden.send_track(provider="geobox", remote_id="../../etc")
    warden.send_track(provider="geobox")
    warden.send_track(provider="geobox", remote_id="x", labels={"a": 1}, surprise=True)
    producer = Celery(broker=warden.redis_url, set_as_current=False)
    producer.send_task("taskwarden.track", args=["geobox", "positional-id"])
    task = warden.sim.geobox.add_task(file_size=10)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    assert warden.wait_final(watch_id("geobox", task.uuid)).state is State.SUCCEEDED
    assert warden.store.redis.zcard("taskwarden:watches") == before + 1

    # each refusal is kept with its reason for `taskwarden deadletters` (two worker processes
    # take messages at once, so the order among these five is not fixed)
    listed = json.loads(warden.cli("deadletters", "--json", "--limit", "5").stdout)
    by_reason = {entry["reason"]: entry for entry in listed}

    def refusal(*words: str) -> dict[str, Any]:
        found = [entry for reason, entry in by_reason.items() if all(w in reason for w in words)]
        assert len(found) == 1, (words, list(by_reason))
        return found[0]

    refusal("keyword arguments")
    assert '"surprise": true' in refusal("surprise", "labels.a")["body"]
    refusal("remote_id: Field required")
    refusal("remote_id", "'/'")
    refusal("unknown provider 'nope'")
    assert all(entry["source"] == "queue" for entry in listed)
    # newest first by stream id (two workers refuse at once, so their own clocks may disagree)
    order = [tuple(int(part) for part in e["id"].split("-")) for e in listed]
    assert order == sorted(order, reverse=True)
    text = warden.cli("deadletters", "--limit", "5").stdout
    assert "unknown provider 'nope'" in text


def test_lost_poll_is_dispatched_again(warden: Warden) -> None:
    """A watch claimed by a poll job that never runs is reclaimed when its lease expires."""
    task = warden.sim.geobox.add_task(file_size=10)
    wid = watch_id("geobox", task.uuid)
    rogue = Store.from_url(warden.redis_url)
    # Registered due an hour from now so that the dispatcher cannot take it before we do...
    later = time.time() + 3600
    rogue.register(Registration(provider="geobox", remote_id=task.uuid), later)
    # ...then claimed as a dispatch would, by a job that is lost: nobody ever polls under it.
    lost = rogue.claim_due("geobox", later, 10, lease_until=time.time() + 1)
    assert [c.watch_id for c in lost] == [wid]
    watch = warden.wait_final(wid, timeout=30)
    assert watch.state is State.SUCCEEDED
    assert watch.fence > lost[0].fence + 1  # reaped (fence bumped), then claimed anew
    rogue.redis.close()


def test_two_beats_never_double_poll(warden: Warden, tmp_path: Path) -> None:
    """With a second beat running, every status request still belongs to exactly one poll."""
    extra = Service(warden.env, log_dir=tmp_path / "logs")
    extra.argvs = {"beat": extra.argvs["beat"]}
    extra.env["TASKWARDEN_DATA_DIR"] = str(tmp_path / "beat2")
    tasks = warden.sim.geobox.add_tasks(
        [{"running_seconds": 2, "file_size": 10} for _ in range(30)]
    )
    with extra:
        for task in tasks:
            warden.send_track(provider="geobox", remote_id=task.uuid)
        for task in tasks:
            watch = warden.wait_final(watch_id("geobox", task.uuid))
            assert watch.state is State.SUCCEEDED
            assert status_gets(warden, task.uuid) == watch.polls + 1  # + the archive's read


def test_cli_track_is_idempotent_and_readable(warden: Warden) -> None:
    """`taskwarden track` twice is one watch; `ls` and `show` report it with its history."""
    task = warden.sim.geobox.add_task(running_seconds=1, file_size=10)
    first = warden.cli("track", "geobox", task.uuid, "--label", "k=v", "--timeout", "600", "--json")
    second = warden.cli("track", "geobox", task.uuid, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["created"] is True
    assert json.loads(second.stdout) == {
        "watch_id": json.loads(first.stdout)["watch_id"],
        "created": False,
    }
    wid = json.loads(first.stdout)["watch_id"]
    warden.wait_final(wid)

    shown = json.loads(warden.cli("show", wid, "--json").stdout)
    assert (shown["state"], shown["raw_status"], shown["labels"]) == (
        "succeeded",
        "SUCCESS",
        {"k": "v"},
    )
    assert [h["to"] for h in shown["history"]][-1] == "succeeded"
    by_ref = json.loads(warden.cli("show", f"geobox:{task.uuid}", "--json").stdout)
    assert by_ref["id"] == wid

    listed = json.loads(
        warden.cli("ls", "--state", "succeeded", "--provider", "geobox", "--json").stdout
    )
    assert wid in [w["id"] for w in listed]
    table = warden.cli("ls", "--provider", "geobox")
    assert table.returncode == 0 and wid in table.stdout

    text = warden.cli("show", wid)
    assert "history:" in text.stdout and "succeeded" in text.stdout


def test_cli_rejects_bad_input_clearly(warden: Warden) -> None:
    """Bad registrations and unknown watches give a clear message and a non-zero exit."""
    bad = warden.cli("track", "nowhere", "abc")
    assert bad.returncode == 2 and "unknown provider 'nowhere'" in bad.stderr
    worse = warden.cli("track", "geobox", "a/../b")
    assert worse.returncode == 2 and "remote_id" in worse.stderr
    missing = warden.cli("show", "w0000000000000000")
    assert missing.returncode == 3 and "no watch" in missing.stderr


def test_cli_cancel_with_abort_stops_watch_and_remote_task(warden: Warden) -> None:
    """`taskwarden cancel --abort` ends the watch and aborts the task on the platform."""
    task = warden.sim.geobox.add_task(outcome="never")
    warden.send_track(provider="geobox", remote_id=task.uuid)
    wid = watch_id("geobox", task.uuid)
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    out = warden.cli("cancel", wid, "--abort")
    assert out.returncode == 0, out.stderr
    watch = warden.store.get(wid)
    assert watch is not None and watch.state is State.CANCELLED
    wait_for(lambda: warden.sim.geobox.state(task.uuid) == "ABORTED", timeout=10)
    count = status_gets(warden, task.uuid)
    time.sleep(1)
    assert status_gets(warden, task.uuid) == count  # no polling after cancel


def test_s3_archive(tmp_path: Path, sim: SimulatorServer, moto_endpoint: str) -> None:
    """With an s3:// archive, outputs and the manifest land in the bucket with right checksums."""
    client = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
    client.create_bucket(Bucket="archive-e2e")
    s3 = {
        "TASKWARDEN_S3__ENDPOINT_URL": moto_endpoint,
        "TASKWARDEN_S3__ALLOW_HTTP": "true",
        "TASKWARDEN_S3__ACCESS_KEY_ID": "testing",
        "TASKWARDEN_S3__SECRET_ACCESS_KEY": "testing",
    }
    with running_warden(tmp_path, sim, archive_url="s3://archive-e2e/runs", **s3) as w:
        task = sim.geobox.add_task(running_seconds=0.5, file_name="dem.tif", file_size=200_000)
        w.send_track(provider="geobox", remote_id=task.uuid)
        watch = w.wait_final(watch_id("geobox", task.uuid))
        assert watch.state is State.SUCCEEDED, watch.last_error
    base = f"runs/geobox/{task.uuid}"
    body = client.get_object(Bucket="archive-e2e", Key=f"{base}/dem.tif")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == task.sha256
    manifest = json.loads(
        client.get_object(Bucket="archive-e2e", Key=f"{base}/manifest.json")["Body"].read()
    )
    assert {o["name"]: o["sha256"] for o in manifest["outputs"]}["dem.tif"] == task.sha256
