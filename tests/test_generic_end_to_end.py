"""The generic ``http`` provider end to end: profiles in settings, registration by Celery
message, real beat and worker processes, the generic simulator, outputs in a file archive."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.generic import GenericAuth, default_states
from taskwarden.simulator.generic import profile as generic_profile
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden, wait_for

PROJECT_STATUS = "api/projects/{project}/jobs/{job_id}"
STATUS = "api/jobs/{job_id}"
WORDS = default_states()
FLAT_SHAPE = {  # another platform: flat fields, fractions, bare signed URLs on another host
    "status_path": "state", "id_path": "id", "name_path": "name", "progress_path": "progress",
    "progress_style": "fraction", "error_path": "error", "outputs_path": "results",
    "output_url_key": None, "outputs_at": "redirect", "storage_host": "localhost",
    "words": {"pending": "PENDING", "running": "RUNNING", "succeeded": "SUCCESS",
              "failed": "FAILURE", "cancelled": "CANCELLED"},
}  # fmt: skip


def profiles(sim: SimulatorServer) -> dict[str, Any]:
    root = sim.generic_url
    acme = generic_profile(root)  # the default shape, read by JSON pointers
    flat = {
        "status_url": root + "api/jobs/{id}",
        "status_path": "state",
        "states": {"pending": ["PENDING"], "running": ["RUNNING"], "succeeded": ["SUCCESS"],
                   "failed": ["FAILURE"], "cancelled": ["CANCELLED"]},
        "progress_path": "progress", "progress_max": 1, "name_path": "name",
        "error_path": "error", "outputs_path": "results",
        "headers": {"Authorization": "Bearer sim-token"},
    }  # fmt: skip
    token = {
        "url": root + "oauth/token",
        "form": {"grant_type": "client_credentials"},
        "basic_username": "sim-client",
        "basic_password": "sim-secret",
    }
    return {
        "acme": acme,
        "flat": flat,
        "oauth": {**acme, "headers": {}, "token": token},
        "nokey": {**acme, "headers": {}},
        "temp": {**acme, "headers": {"X-Api-Key": "temp-key"}},
    }


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer) -> Iterator[Warden]:
    """A warden whose http provider knows the profiles above (inline specs off, the default)."""
    env = {"TASKWARDEN_PROVIDERS__HTTP__PROFILES": json.dumps(profiles(sim))}
    with running_warden(tmp_path_factory.mktemp("generic"), sim, **env) as w:
        yield w


@pytest.fixture(autouse=True)
def _generic_defaults(sim: SimulatorServer) -> Iterator[None]:
    """Each test starts and leaves the session simulator's generic credentials at defaults."""
    sim.generic.auth = GenericAuth()
    yield
    sim.generic.auth = GenericAuth()


def track(w: Warden, remote_id: str, **params: Any) -> str:
    w.send_track(provider="http", remote_id=remote_id, params=params)
    return watch_id("http", remote_id)


def folder(w: Warden, remote_id: str) -> Path:
    assert w.archive_dir is not None
    return w.archive_dir / "http" / remote_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_success_archives_status_document_and_outputs(warden: Warden) -> None:
    """A job registered by message is followed through its percent progress to an archive of
    status.json and each listed output, checksums matching what the platform served."""
    job = warden.sim.generic.add_task(
        title="ndvi", pending_seconds=0.5, running_seconds=3, file_name="scene.tif",
        file_size=200_000, extra_outputs=[{"name": "report.csv", "size": 300}],
    )  # fmt: skip
    wid = track(warden, f"acme:{job.id}", project="demo")
    watch, seen = warden.follow(wid, timeout=60)
    assert (watch.state, watch.raw_status, watch.name) == (State.SUCCEEDED, "completed", "ndvi")
    assert len([p for p in seen if 0 < p < 1]) >= 2, f"progress seen along the way: {seen}"

    here = folder(warden, f"acme:{job.id}")
    for name, digest in job.checksums.items():
        assert sha256(here / name) == digest
    status_doc = json.loads((here / "status.json").read_text())
    assert status_doc["data"]["attributes"]["phase"] == "completed"
    manifest = json.loads((here / "manifest.json").read_text())
    assert manifest["final_status"] == "completed"
    assert {o["name"]: o["sha256"] for o in manifest["outputs"]} == {
        "status.json": sha256(here / "status.json"),
        **job.checksums,
    }
    # one status request per committed check, plus the archive's read of the final document
    assert warden.sim.stats.count(route=PROJECT_STATUS, task=job.id) == watch.polls + 1
    assert warden.sim.stats.count(route="api/jobs/{job_id}/files/{name}", task=job.id) == 2


def test_failure_records_the_text_at_error_path(warden: Warden) -> None:
    """A job the platform fails ends `failed` with the text found at the profile's error_path."""
    job = warden.sim.generic.add_task(
        running_seconds=0.5, outcome="failure", failure_message="CRS EPSG:99999 is unknown"
    )
    watch = warden.wait_final(track(warden, f"acme:{job.id}", project="demo"))
    assert (watch.state, watch.raw_status) == (State.FAILED, "errored")
    assert watch.last_error == "CRS EPSG:99999 is unknown"
    assert not folder(warden, f"acme:{job.id}").exists()


def test_a_job_cancelled_on_the_platform_ends_cancelled(warden: Warden) -> None:
    """A job canceled on the platform's side ends `cancelled`, its word kept raw."""
    job = warden.sim.generic.add_task(running_seconds=1, outcome="aborted")
    watch = warden.wait_final(track(warden, f"acme:{job.id}", project="demo"))
    assert (watch.state, watch.raw_status) == (State.CANCELLED, "canceled")


def test_cancel_with_abort_sends_the_profiles_abort_request(warden: Warden) -> None:
    """`taskwarden cancel --abort` ends the watch and POSTs the profile's abort_url."""
    job = warden.sim.generic.add_task(outcome="never")
    wid = track(warden, f"acme:{job.id}", project="demo")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    out = warden.cli("cancel", wid, "--abort")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: warden.sim.generic.state(job.id) == "canceled", timeout=30)
    count = warden.sim.stats.count(route=PROJECT_STATUS, task=job.id)
    time.sleep(1)
    assert warden.sim.stats.count(route=PROJECT_STATUS, task=job.id) == count


def test_unknown_word_is_noted_and_polling_goes_on(warden: Warden) -> None:
    """A word the profile does not list is recorded raw, noted, and the watch still finishes."""
    job = warden.sim.generic.add_task(running_seconds=2, file_size=10)
    warden.sim.inject(kind="unknown_status", task=job.id, word="on_hold", count=2)
    watch = warden.wait_final(track(warden, f"acme:{job.id}", project="demo"))
    assert watch.state is State.SUCCEEDED
    notes = [h["note"] or "" for h in warden.store.history(watch.id)]
    assert any("unknown status word 'on_hold'" in n for n in notes)


def test_another_shape_with_signed_urls_behind_a_redirect(warden: Warden) -> None:
    """A flat platform (dotted paths, fractions, bare URLs) whose files redirect to signed
    storage on another host: archived, and its bearer token never reached the storage."""
    job = warden.sim.generic.add_task(
        running_seconds=1.5, file_name="dem.tif", file_size=50_000, shape=FLAT_SHAPE
    )
    watch = warden.wait_final(track(warden, f"flat:{job.id}"), timeout=60)
    assert (watch.state, watch.raw_status) == (State.SUCCEEDED, "SUCCESS"), watch.last_error
    assert sha256(folder(warden, f"flat:{job.id}") / "dem.tif") == job.sha256
    assert warden.sim.generic.rejected(task=job.id) == 0
    assert warden.sim.stats.count(route="storage/{job_id}/{name}", task=job.id) == 1


def test_missing_api_key_header_ends_in_error_after_one_request(warden: Warden) -> None:
    """A profile without the platform's API key header ends in `error` (credentials
    rejected), after a single request, while the same job with the key succeeds."""
    job = warden.sim.generic.add_task(file_size=10)
    refused = warden.wait_final(track(warden, f"nokey:{job.id}", project="demo"))
    assert refused.state is State.ERROR
    assert refused.last_error is not None and "credentials rejected" in refused.last_error
    assert "authentication required" in refused.last_error
    time.sleep(0.5)
    assert warden.sim.generic.rejected("no_credentials", job.id) == 1
    accepted = warden.wait_final(track(warden, f"acme:{job.id}", project="demo"))
    assert accepted.state is State.SUCCEEDED


def test_a_key_revoked_mid_watch_ends_in_error_without_hammering(warden: Warden) -> None:
    """An API key the platform stops accepting mid-watch ends the watch in `error`, and
    polling stops there."""
    warden.sim.generic.configure({"api_keys": ["sim-key", "temp-key"]})
    job = warden.sim.generic.add_task(running_seconds=30)
    wid = track(warden, f"temp:{job.id}", project="demo")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    warden.sim.generic.configure({"api_keys": ["sim-key"]})
    watch = warden.wait_final(wid)
    assert watch.state is State.ERROR
    assert watch.last_error is not None and "invalid API key" in watch.last_error
    count = warden.sim.stats.count(route=PROJECT_STATUS, task=job.id)
    time.sleep(1)
    assert warden.sim.stats.count(route=PROJECT_STATUS, task=job.id) == count
    assert warden.sim.generic.rejected("bad_key", job.id) == 1


def test_a_token_that_expires_mid_watch_is_renewed(warden: Warden) -> None:
    """Tokens from the token endpoint that expire (unannounced) mid-watch are renewed on the
    401, once per expiry, and the job is followed to its archive."""
    warden.sim.generic.configure({"token_ttl": 1.5, "announce_ttl": False})
    job = warden.sim.generic.add_task(running_seconds=5, file_size=1000)
    watch = warden.wait_final(track(warden, f"oauth:{job.id}", project="demo"), timeout=60)
    assert watch.state is State.SUCCEEDED, watch.last_error
    assert sha256(folder(warden, f"oauth:{job.id}") / "output.bin") == job.sha256
    expired = warden.sim.generic.rejected("expired_token", job.id)
    tokens = warden.sim.stats.count(route="oauth/token")
    assert expired >= 1, "the token should have expired at least once during the watch"
    assert tokens >= expired  # every refused token was replaced before the next check
    assert warden.sim.generic.rejected("bad_token", job.id) == 0


@pytest.mark.parametrize(
    ("remote_id", "params", "reason"),
    [
        ("acme:{id}", {"spec": {"status_url": "http://169.254.169.254/{id}"}}, "ALLOW_INLINE_SPECS=true"),
        ("acme:{id}", {}, "status_url needs {project}"),
        ("ghost:{id}", {}, "no http profile 'ghost'"),
        ("{id}", {}, "'<profile>:<task id>'"),
    ],
)  # fmt: skip
def test_unusable_registrations_are_refused_without_a_request(
    warden: Warden, remote_id: str, params: dict[str, Any], reason: str
) -> None:
    """An inline spec (refused unless allowed), a missing template param, an unknown profile
    or an id without a profile is refused at registration saying why (dead-lettered, no
    watch), and asks the platform nothing."""
    job = warden.sim.generic.add_task()
    wid = track(warden, remote_id.format(id=job.id), **params)
    letter = warden.dead_letter(job.id)
    assert reason in letter["reason"]
    assert warden.store.get(wid) is None
    assert warden.sim.stats.count(platform="generic", task=job.id) == 0


def test_providers_command_masks_profile_secrets(warden: Warden) -> None:
    """`taskwarden providers` lists the http profiles without their header or token secrets."""
    out = warden.cli("providers", "--json")
    assert out.returncode == 0, out.stderr
    row = next(r for r in json.loads(out.stdout) if r["name"] == "http")
    assert sorted(row["settings"]["profiles"]) == ["acme", "flat", "nokey", "oauth", "temp"]
    assert row["settings"]["profiles"]["acme"]["headers"] == {"X-Api-Key": "**********"}
    assert "sim-key" not in out.stdout and "sim-secret" not in out.stdout
