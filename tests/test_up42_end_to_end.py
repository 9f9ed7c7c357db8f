"""UP42 end to end: registration by Celery message, real beat and worker processes, the UP42
simulator on loopback (OAuth, v1 envelope, signed URLs, real .tgz results), a file archive."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskwarden.lifecycle import State
from taskwarden.models import Watch, watch_id
from taskwarden.simulator.server import SimulatorServer
from taskwarden.simulator.up42 import Up42Auth
from taskwarden.simulator.up42_jobs import Up42Job

from .conftest import Warden, running_warden, wait_for
from .up42_sdk import logged_in

JOB = "projects/{project}/jobs/{job}"
SIGNED = "signed/{owner}/output.tgz"
# signed URLs on another origin than the API (localhost for 127.0.0.1), as on the platform
AUTH = Up42Auth(storage_host="localhost").model_dump()


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("up42-spool")


@pytest.fixture(scope="module")
def warden(
    tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer, spool: Path
) -> Iterator[Warden]:
    """A warden whose UP42 provider logs in with a password to the session simulator (at its
    Keycloak route: with only BASE_URL set, the token endpoint is under it)."""
    sim.up42.configure(AUTH)
    env = {
        "TASKWARDEN_PROVIDERS__UP42__BASE_URL": sim.up42_url,
        "TASKWARDEN_PROVIDERS__UP42__USERNAME": "sim-user",
        "TASKWARDEN_PROVIDERS__UP42__PASSWORD": "sim-password",
        "TASKWARDEN_PROVIDERS__UP42__SPOOL_DIR": str(spool),
    }
    with running_warden(tmp_path_factory.mktemp("up42"), sim, **env) as w:
        yield w


def track_job(w: Warden, job: Up42Job, **extra: Any) -> str:
    w.send_track(provider="up42", remote_id=job.id, params={"project_id": job.spec.project_id},
                 **extra)  # fmt: skip
    return watch_id("up42", job.id)


def folder(w: Warden, remote_id: str) -> Path:
    assert w.archive_dir is not None
    return w.archive_dir / "up42" / remote_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flat(results: dict[str, str]) -> dict[str, str]:
    """Expected archive names: output/ stripped, '/' written as '__'."""
    return {name.replace("/", "__"): digest for name, digest in results.items()}


def no_spool_left(spool: Path) -> bool:
    return not list(spool.rglob("*.tgz"))


def test_a_job_runs_to_success_and_its_outputs_are_archived(warden: Warden, spool: Path) -> None:
    """A v1 job registered by message goes NOT STARTED → RUNNING (with task progress) →
    SUCCEEDED; every results file, data-json, logs and quicklooks land in the archive with
    the checksums the platform served, the signed URL is fetched once and no spool remains."""
    job = warden.sim.up42.add_job(
        pending_seconds=4, running_seconds=4, not_started_word="NOT STARTED",
        tasks=[{"block": "data"},
               {"block": "ndvi", "members": [{"name": "ndvi.tif", "size": 50_000},
                                            {"name": "stats/summary.json", "size": 700}]}],
    )  # fmt: skip
    wid = track_job(warden, job, labels={"team": "maps"})
    words: set[str] = set()
    progress: set[float] = set()

    def done() -> bool:
        watch = warden.store.get(wid)
        if watch is not None and watch.raw_status:
            words.add(watch.raw_status)
            if watch.progress is not None and watch.state is State.RUNNING:
                progress.add(watch.progress)
        return watch is not None and watch.state.final

    wait_for(done, timeout=60, every=0.02)
    watch = warden.store.get(wid)
    assert watch is not None
    assert (watch.state, watch.raw_status, watch.name) == (
        State.SUCCEEDED,
        "SUCCEEDED",
        job.spec.name,
    )
    assert {"NOT STARTED", "RUNNING"} <= words
    assert 0.5 in progress, f"task progress seen: {progress}"

    out = folder(warden, job.id)
    expected = flat(job.results.results_sha256)
    assert {name: sha256(out / name) for name in expected} == expected
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {o["name"]: o for o in manifest["outputs"]}
    first = job.tasks[0]
    assert {"job.json", "tasks.json", "data-json.geojson", f"task-{first.id}.log",
            f"task-{first.id}_quicklook_ql-1.jpeg"} <= set(by_name)  # fmt: skip
    assert by_name["ndvi.tif"]["source"].endswith("/downloads/results/#output/ndvi.tif")
    assert (
        by_name[f"task-{first.id}_quicklook_ql-1.jpeg"]["sha256"]
        == first.quicklooks_sha256["ql-1.jpeg"]
    )
    assert manifest["final_status"] == "SUCCEEDED"
    stats = warden.sim.stats
    assert stats.count(route=SIGNED, task=job.id) == 1
    assert stats.count(route=JOB, task=job.id) == watch.polls + 1  # + the archive's read
    assert no_spool_left(spool)


def test_two_tasks_of_one_job_are_archived_apart(warden: Warden) -> None:
    """Each job task is its own watch with its own folder: their results never overwrite."""
    job = warden.sim.up42.add_job(running_seconds=1, tasks=[{}, {}])
    for task in job.tasks:
        warden.send_track(provider="up42", remote_id=task.id,
                          params={"project_id": job.spec.project_id, "job_id": job.id})  # fmt: skip
    for task in job.tasks:
        watch = warden.wait_final(watch_id("up42", task.id), timeout=60)
        assert watch.state is State.SUCCEEDED, watch.last_error
        out = folder(warden, task.id)
        assert {n: sha256(out / n) for n in flat(task.results_sha256)} == flat(task.results_sha256)
        assert json.loads((out / "task.json").read_text())["id"] == task.id
    one, two = (flat(t.results_sha256)["scene__scene.tif"] for t in job.tasks)
    assert one != two


def test_a_failed_job_is_explained_by_its_task_log(warden: Warden) -> None:
    """A FAILED job ends failed with the failing task and the end of its log; nothing archived."""
    job = warden.sim.up42.add_job(
        running_seconds=1, outcome="failure", tasks=[{"block": "data"}, {"block": "ndvi"}],
        failure_log="reading scene\nERROR: band B08 missing",
    )  # fmt: skip
    watch = warden.wait_final(track_job(warden, job), timeout=60)
    assert (watch.state, watch.raw_status) == (State.FAILED, "FAILED")
    assert watch.last_error is not None
    assert watch.last_error.startswith("task ndvi:1 FAILED")
    assert watch.last_error.endswith("ERROR: band B08 missing")
    assert not folder(warden, job.id).exists()


LONG_LOG = "\n".join(f"step {i}: resampling band B{i % 12:02d} of scene S2A" for i in range(600))


def test_a_failed_final_job_archives_every_task_log_whole(warden: Warden) -> None:
    """With archive "final", a FAILED v1 job goes through archiving and ends failed: job.json,
    tasks.json, credits.json and each task's log in full (not the 300-character tail in
    last_error) are archived, the manifest says `failed`, the watch keeps UP42's times."""
    job = warden.sim.up42.add_job(
        running_seconds=1, outcome="failure", credits=42, failure_log=LONG_LOG,
        tasks=[{"block": "data"}, {"block": "ndvi"}],
    )  # fmt: skip
    wid = track_job(warden, job, archive="final")
    watch = warden.wait_final(wid, timeout=60)
    assert (watch.state, watch.raw_status, watch.outcome) == (State.FAILED, "FAILED", State.FAILED)
    assert watch.last_error is not None and len(watch.last_error) < 1000
    assert [h["to"] for h in warden.store.history(wid)][-2:] == ["archiving", "failed"]
    out = folder(warden, job.id)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["final_state"], manifest["final_status"]) == ("failed", "FAILED")
    first, last = job.tasks
    names = [o["name"] for o in manifest["outputs"]]
    assert names == ["job.json", "tasks.json", "credits.json",
                     f"task-{first.id}.log", f"task-{last.id}.log"]  # fmt: skip
    now = warden.sim.clock.now()
    assert (out / f"task-{last.id}.log").read_text() == last.log(now)
    assert len((out / f"task-{last.id}.log").read_bytes()) > 20_000
    assert (out / f"task-{first.id}.log").read_text() == first.log(now)
    by_name = {o["name"]: o for o in manifest["outputs"]}
    assert by_name[f"task-{last.id}.log"]["sha256"] == sha256(out / f"task-{last.id}.log")
    assert json.loads((out / "credits.json").read_text())["data"]["creditsUsed"] == 42
    assert watch.remote_created_at is not None and watch.remote_ended_at is not None


def test_a_job_cancelled_on_the_platform_passes_through_cancelling(warden: Warden) -> None:
    """CANCELLING keeps the watch running; it ends cancelled at CANCELLED."""
    job = warden.sim.up42.add_job(running_seconds=1, outcome="aborted", cancelling_seconds=2)
    wid = track_job(warden, job)
    seen: list[tuple[str, str | None]] = []

    def done() -> Watch | None:
        watch = warden.store.get(wid)
        if watch is not None:
            seen.append((str(watch.state), watch.raw_status))
        return watch if watch is not None and watch.state.final else None

    watch = wait_for(done, timeout=60, every=0.05)
    assert (watch.state, watch.raw_status) == (State.CANCELLED, "CANCELLED")
    assert ("running", "CANCELLING") in seen


def test_cancel_with_abort_cancels_the_job_on_up42(warden: Warden) -> None:
    """`taskwarden cancel --abort` ends the watch and POSTs the job's cancel/ once."""
    job = warden.sim.up42.add_job(outcome="never")
    wid = track_job(warden, job)
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    out = warden.cli("cancel", wid, "--abort")
    assert out.returncode == 0, out.stderr
    watch = warden.store.get(wid)
    assert watch is not None and watch.state is State.CANCELLED
    wait_for(lambda: warden.sim.up42.status(job.id) in ("CANCELLING", "CANCELLED"), timeout=20)
    assert warden.sim.stats.count(route=JOB + "/cancel/", task=job.id) == 1


def test_a_token_that_expires_mid_watch_is_refreshed_once_per_401(warden: Warden) -> None:
    """Tokens that die long before the expires_in they announce cost one refresh per 401:
    the watch never errs and the token endpoint is not hammered."""
    up42 = warden.sim.up42
    up42.configure({"token_ttl": 1.0, "announced_ttl": 3600})
    try:
        up42.revoke_tokens()  # whatever the workers hold is dead now
        grants, rejected = up42.token_grants, up42.rejected
        job = up42.add_job(running_seconds=5, tasks=[{}, {}])
        watch = warden.wait_final(track_job(warden, job), timeout=60)
        assert watch.state is State.SUCCEEDED, watch.last_error
        refused, granted = up42.rejected - rejected, up42.token_grants - grants
    finally:
        up42.configure(AUTH)
    assert refused >= 2
    # one fresh token per 401, plus at most one first token per worker process
    assert refused <= granted <= refused + 4
    notes = [h["note"] or "" for h in warden.store.history(watch.id)]
    assert not any("credentials" in n or "401" in n for n in notes)
    assert watch.errors == 0


def test_an_expired_signed_url_is_renewed_during_the_archive(warden: Warden, spool: Path) -> None:
    """Results whose first two signed URLs answer ExpiredToken are still archived whole."""
    job = warden.sim.up42.add_job(expired_downloads=2)
    watch = warden.wait_final(track_job(warden, job), timeout=60)
    assert watch.state is State.SUCCEEDED, watch.last_error
    expected = flat(job.results.results_sha256)
    assert {n: sha256(folder(warden, job.id) / n) for n in expected} == expected
    assert warden.sim.stats.count(route=SIGNED, task=job.id) == 3
    assert no_spool_left(spool)


def test_links_in_a_tarball_are_skipped_and_listed(warden: Warden, spool: Path) -> None:
    """A results tarball with a symlink and a FIFO archives its regular files; the manifest
    lists the link and the FIFO as skipped, saying what they are (the SDK skipped them)."""
    job = warden.sim.up42.add_job(
        tasks=[{"members": [{"name": "data.json"}, {"name": "pipe", "kind": "fifo"},
                            {"name": "evil", "kind": "symlink", "target": "/etc/passwd"}]}]
    )  # fmt: skip
    watch = warden.wait_final(track_job(warden, job), timeout=60)
    assert watch.state is State.SUCCEEDED, watch.last_error
    out = folder(warden, job.id)
    assert sha256(out / "data.json") == job.results.results_sha256["data.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(s["name"], s["reason"]) for s in manifest["skipped"]] == [
        ("output/pipe", "FIFO"),
        ("output/evil", "symbolic link to '/etc/passwd'"),
    ]
    assert not (out / "evil").exists() and no_spool_left(spool)


def test_a_tarball_that_escapes_ends_in_error_and_archives_nothing(
    warden: Warden, spool: Path
) -> None:
    """A results tarball with a '..' member is refused: the watch ends in error naming it."""
    job = warden.sim.up42.add_job(
        tasks=[{"members": [{"name": "data.json"}, {"name": "../../escape.sh"}]}]
    )
    watch = warden.wait_final(track_job(warden, job), timeout=60)
    assert watch.state is State.ERROR
    assert watch.last_error is not None and "points outside the results" in watch.last_error
    assert not (folder(warden, job.id) / "manifest.json").exists()
    assert no_spool_left(spool)


def test_a_processing_job_archives_the_assets_the_sdk_downloads(
    warden: Warden, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A v2 job registered with empty params ends at successful; job.json, collection.json,
    every item's JSON and every asset are archived, and up42-py 4.3's own STAC and download
    code (Job.collection.get_items(), asset.file.download()) gets the same files, byte for
    byte and by the same names, as the manifest's sha256 and sizes say."""
    job = warden.sim.up42.add_processing(
        pending_seconds=0.5, running_seconds=1, settle_seconds=None, page_size=2,
        items=[{"id": f"scene-{i}", "assets": [
            {"key": "data", "filename": f"scene {i}", "size": 30_000},
            {"key": "cloudmask", "filename": f"mask {i}", "suffix": ".png",
             "media_type": "image/png"}]} for i in range(3)],
    )  # fmt: skip
    warden.send_track(provider="up42", remote_id=job.id)
    watch = warden.wait_final(watch_id("up42", job.id), timeout=60)
    assert (watch.state, watch.raw_status, watch.name) == (
        State.SUCCEEDED,
        "successful",
        "upsampling",
    )
    out = folder(warden, job.id)
    assert json.loads((out / "collection.json").read_text())["id"] == job.spec.collection_id
    assert json.loads((out / "job.json").read_text())["jobID"] == job.id
    assert json.loads((out / "item-scene-1.json").read_text())["id"] == "scene-1"
    manifest = json.loads((out / "manifest.json").read_text())
    archived = {o["source"]: o for o in manifest["outputs"]}

    sdk = logged_in(warden.sim, monkeypatch)
    downloaded = 0
    for item in sdk.Job.get(job.id).collection.get_items():
        for asset in item.assets.values():
            path = asset.file.download(tmp_path)
            entry = archived["up42:" + asset.href.removeprefix(warden.sim.up42_url + "/")]
            assert (entry["name"], entry["size"]) == (path.name, path.stat().st_size)
            assert (out / entry["name"]).read_bytes() == path.read_bytes()
            assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            downloaded += 1
    assert downloaded == len(job.assets_sha256) == 6
    assets = [o["sha256"] for o in manifest["outputs"]
              if o["source"].startswith("up42:v2/assets/") and "/stac/" not in o["source"]]  # fmt: skip
    assert sorted(assets) == sorted(job.assets_sha256.values())


def test_a_failed_processing_job_quotes_results_errors(warden: Warden) -> None:
    """A v2 job that fails ends failed at 'failed', quoting results.errors."""
    job = warden.sim.up42.add_processing(
        outcome="failed", running_seconds=0.5, release_seconds=30,
        errors=[{"name": "BandError", "message": "band 4 missing"}],
    )  # fmt: skip
    warden.send_track(provider="up42", remote_id=job.id, params={"kind": "processing"})
    watch = warden.wait_final(watch_id("up42", job.id), timeout=60)
    assert (watch.state, watch.raw_status) == (State.FAILED, "failed")
    assert watch.last_error == "the job failed; BandError: band 4 missing"


def test_bad_params_are_refused_at_registration(warden: Warden) -> None:
    """Params that name no UP42 job are refused (dead-lettered, no watch), asking UP42 nothing."""
    warden.send_track(provider="up42", remote_id="some-job", params={"project": "typo"})
    assert "unknown up42 params ['project']" in warden.dead_letter("some-job")["reason"]
    assert warden.store.get(watch_id("up42", "some-job")) is None
    assert warden.sim.stats.count(task="some-job") == 0


def test_an_unknown_word_is_noted_and_polling_goes_on(warden: Warden) -> None:
    """A status word UP42 never documented is recorded and noted; the watch still finishes."""
    job = warden.sim.up42.add_job(running_seconds=2)
    warden.sim.inject(kind="unknown_status", task=job.id, route=JOB, word="PAUSED", count=2)
    watch = warden.wait_final(track_job(warden, job), timeout=60)
    assert watch.state is State.SUCCEEDED
    notes = [h["note"] or "" for h in warden.store.history(watch.id)]
    assert any("unknown status word 'PAUSED'" in n for n in notes)
