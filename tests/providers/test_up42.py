"""The UP42 adapter against the UP42 simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from taskwarden.config.settings import HttpSettings
from taskwarden.errors import (
    CredentialsRejected,
    OutputInvalid,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
    RequestRejected,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.up42 import adapter as up42
from taskwarden.providers.up42.api import v1_data
from taskwarden.simulator.server import SimulatorServer

from .up42_kit import (
    PROJECT,
    archive,
    call,
    job_target,
    reset,
    sha,
    task_target,
)

JOB = "projects/{project}/jobs/{job}"
TASKS = JOB + "/tasks/"
SIGNED = "signed/{owner}/output.tgz"
TOKEN = "realms/public/protocol/openid-connect/token"


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator with UP42's default auth (tokens live 300 s)."""
    return reset(server)


def status(server: SimulatorServer, target: Target, **fields: Any) -> Observation:
    return call(server, lambda p: p.fetch_status(target), **fields)


# --- status words --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "remote", "word"),
    [
        ({"pending_seconds": 3600}, Remote.PENDING, "NOT_STARTED"),
        (
            {"pending_seconds": 3600, "not_started_word": "NOT STARTED"},
            Remote.PENDING,
            "NOT STARTED",
        ),
        ({"running_seconds": 3600}, Remote.RUNNING, "RUNNING"),
        ({"outcome": "never"}, Remote.RUNNING, "RUNNING"),
        ({}, Remote.SUCCEEDED, "SUCCEEDED"),
        ({"outcome": "failure"}, Remote.FAILED, "FAILED"),
        ({"outcome": "failure", "failure_word": "ERROR"}, Remote.FAILED, "ERROR"),
        ({"outcome": "aborted", "cancelling_seconds": 3600}, Remote.RUNNING, "CANCELLING"),
        ({"outcome": "aborted", "cancelling_seconds": 0}, Remote.CANCELLED, "CANCELLED"),
    ],
)
def test_v1_job_words_map_onto_the_canonical_lifecycle(
    sim: SimulatorServer, script: dict[str, Any], remote: Remote, word: str
) -> None:
    """Each v1 status word (both NOT_STARTED spellings, CANCELLING as running) maps as documented."""
    job = sim.up42.add_job(name="ndvi run", **script)
    seen = status(sim, job_target(job))
    assert (seen.remote, seen.raw_status, seen.name) == (remote, word, "ndvi run")


def test_pending_turns_from_not_started_to_pending(sim: SimulatorServer) -> None:
    """A job shows NOT_STARTED in the first half of its pending time, then PENDING."""
    job = sim.up42.add_job(pending_seconds=100)
    sim.clock.advance(60)
    assert status(sim, job_target(job)).raw_status == "PENDING"


def test_a_running_job_reports_task_progress(sim: SimulatorServer) -> None:
    """While RUNNING the job's tasks/ give progress: finished tasks over all tasks."""
    job = sim.up42.add_job(running_seconds=400, tasks=[{}, {}, {}, {}])
    sim.clock.advance(250)
    seen = status(sim, job_target(job))
    assert (seen.remote, seen.progress) == (Remote.RUNNING, 0.5)
    assert sim.stats.count(route=TASKS, task=job.id) == 1


@pytest.mark.parametrize("script", [{"pending_seconds": 3600}, {}, {"outcome": "aborted"}])
def test_one_request_per_check_outside_running_and_failure(
    sim: SimulatorServer, script: dict[str, Any]
) -> None:
    """A pending, succeeded or cancelled job costs exactly one request per check."""
    job = sim.up42.add_job(cancelling_seconds=0, **script)
    status(sim, job_target(job))
    assert sim.stats.count(task=job.id) == 1


def test_a_failed_job_names_the_task_and_quotes_its_log(sim: SimulatorServer) -> None:
    """FAILED comes with the failing task's name and the end of its log."""
    job = sim.up42.add_job(
        outcome="failure",
        tasks=[{"block": "data"}, {"block": "ndvi"}],
        failure_log="loading bands\nERROR: band B08 missing from scene S2A",
    )
    seen = status(sim, job_target(job))
    assert seen.remote is Remote.FAILED
    assert seen.message is not None
    assert seen.message.startswith("task ndvi:1 FAILED: ")
    assert seen.message.endswith("ERROR: band B08 missing from scene S2A")


@pytest.mark.parametrize(
    ("index", "remote", "word"),
    [
        (0, Remote.SUCCEEDED, "SUCCEEDED"),
        (1, Remote.RUNNING, "RUNNING"),
        (2, Remote.PENDING, "NOT_STARTED"),
    ],
)
def test_a_job_task_is_the_element_of_its_jobs_task_list(
    sim: SimulatorServer, index: int, remote: Remote, word: str
) -> None:
    """A job task's status is its element of tasks/; tasks run one after the other."""
    job = sim.up42.add_job(running_seconds=300, tasks=[{}, {"block": "b"}, {}])
    sim.clock.advance(150)
    seen = status(sim, task_target(job, index))
    assert (seen.remote, seen.raw_status) == (remote, word)
    assert sim.stats.count(route=TASKS, task=job.id) == 1


def test_a_failed_job_task_quotes_its_log(sim: SimulatorServer) -> None:
    """A FAILED task's message is the tail of its own log."""
    job = sim.up42.add_job(outcome="failure", failure_log="ERROR: out of memory")
    seen = status(sim, task_target(job))
    assert seen.remote is Remote.FAILED
    assert seen.message is not None and seen.message.endswith(
        "processing 2 outputs / ERROR: out of memory"
    )


def test_an_unknown_status_word_is_recorded_raw(sim: SimulatorServer) -> None:
    """A word UP42 never documented maps to UNKNOWN with the word kept."""
    job = sim.up42.add_job(running_seconds=1000)
    sim.inject(kind="unknown_status", task=job.id, word="PAUSED")
    seen = status(sim, job_target(job))
    assert (seen.remote, seen.raw_status, seen.progress) == (Remote.UNKNOWN, "PAUSED", None)


# --- v2 processing jobs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "settle", "remote", "word"),
    [
        ({"pending_seconds": 100}, False, Remote.PENDING, "created"),
        ({"running_seconds": 100}, False, Remote.RUNNING, "running"),
        ({"settle_seconds": 100}, False, Remote.SUCCEEDED, "successful"),
        ({"settle_seconds": 100}, True, Remote.RUNNING, "successful"),
        ({"settle_seconds": 0}, True, Remote.SUCCEEDED, "captured"),
        ({"outcome": "failed", "release_seconds": 100}, False, Remote.FAILED, "failed"),
        ({"outcome": "failed", "release_seconds": 100}, True, Remote.RUNNING, "failed"),
        ({"outcome": "failed", "release_seconds": 0}, True, Remote.FAILED, "released"),
        ({"outcome": "invalid"}, False, Remote.FAILED, "invalid"),
        ({"outcome": "rejected"}, True, Remote.FAILED, "rejected"),
        ({"outcome": "unlicensed"}, False, Remote.FAILED, "unlicensed"),
    ],
)
def test_v2_words_map_with_and_without_settling(
    sim: SimulatorServer, script: dict[str, Any], settle: bool, remote: Remote, word: str
) -> None:
    """Processing words map as documented; settle_credits holds successful/failed as running."""
    job = sim.up42.add_processing(process_id="sharpening", **script)
    seen = status(sim, Target(job.id), settle_credits=settle)
    assert (seen.remote, seen.raw_status, seen.name) == (remote, word, "sharpening")


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("failed", "the job failed; BandError: band 4 missing"),
        ("invalid", "UP42 found the job definition invalid; BandError: band 4 missing"),
        (
            "rejected",
            "UP42 rejected the job (credits could not be reserved); BandError: band 4 missing",
        ),
    ],
)
def test_v2_failures_explain_themselves(sim: SimulatorServer, outcome: str, expected: str) -> None:
    """A failed processing job's message says what happened and quotes results.errors."""
    job = sim.up42.add_processing(
        outcome=outcome,
        errors=[{"name": "BandError", "message": "band 4 missing"}],
        release_seconds=3600,
    )
    assert status(sim, Target(job.id)).message == expected


# --- registration params ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"project": "x"}, "unknown up42 params"),
        ({"project_id": ""}, "non-empty string"),
        ({"kind": "job"}, "needs project_id"),
        ({"kind": "processing", "project_id": "p"}, "needs neither"),
        ({"job_id": "j"}, "needs project_id and job_id"),
        ({"kind": "workflow"}, "a kind of job, jobtask or processing"),
    ],
)
def test_malformed_params_are_rejected_with_the_reason(params: dict[str, Any], error: str) -> None:
    """Params that do not name a job, job task or processing job are a permanent rejection."""
    with pytest.raises(RequestRejected, match=error):
        up42.parse_target(Target("some-id", params))


def test_a_task_of_another_job_is_not_found(sim: SimulatorServer) -> None:
    """A job task id that is not in the named job's tasks/ is RemoteNotFound."""
    one, other = sim.up42.add_job(), sim.up42.add_job()
    target = Target(other.tasks[0].id, {"project_id": PROJECT, "job_id": one.id})
    with pytest.raises(RemoteNotFound, match="is not a task of job"):
        status(sim, target)


@pytest.mark.parametrize("kind", ["job", "processing"])
def test_missing_jobs_are_remote_not_found(sim: SimulatorServer, kind: str) -> None:
    """A 404 (v1 envelope or v2 problem document) is RemoteNotFound with UP42's words."""
    target = Target("nope", {"project_id": PROJECT} if kind == "job" else {})
    with pytest.raises(RemoteNotFound, match="Job nope not found"):
        status(sim, target)


def test_a_job_of_another_project_is_not_found(sim: SimulatorServer) -> None:
    """The project in the params must be the job's: UP42 answers 404 otherwise."""
    job = sim.up42.add_job()
    with pytest.raises(RemoteNotFound):
        status(sim, Target(job.id, {"project_id": "other-project"}))


# --- outputs ---------------------------------------------------------------------------------


def test_a_job_archives_documents_results_data_json_logs_and_quicklooks(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A succeeded job's outputs: its documents, every results file byte for byte (output/
    stripped), data-json, each task's log and quicklooks; the spool is gone afterwards."""
    job = sim.up42.add_job(
        tasks=[
            {"block": "data", "quicklooks": ["a.jpeg", "b.jpeg"]},
            {"block": "ndvi", "quicklooks": [],
             "members": [{"name": "ndvi.tif", "size": 70_000}, {"name": "meta/info.json"}]},
        ]
    )  # fmt: skip
    got = archive(sim, job_target(job), spool_dir=tmp_path)
    first, last = job.tasks
    assert list(got) == [
        "job.json",
        "tasks.json",
        "ndvi.tif",
        "meta__info.json",
        "data-json.geojson",
        f"task-{first.id}.log",
        f"task-{first.id}_quicklook_a.jpeg",
        f"task-{first.id}_quicklook_b.jpeg",
        f"task-{last.id}.log",
    ]
    assert json.loads(got["job.json"])["data"]["id"] == job.id
    assert sha(got["ndvi.tif"]) == last.results_sha256["ndvi.tif"]
    assert sha(got["meta__info.json"]) == last.results_sha256["meta/info.json"]
    assert sha(got[f"task-{first.id}_quicklook_b.jpeg"]) == first.quicklooks_sha256["b.jpeg"]
    assert json.loads(got["data-json.geojson"])["type"] == "FeatureCollection"
    assert b"block ndvi" in got[f"task-{last.id}.log"]
    assert sim.stats.count(route=SIGNED, task=job.id) == 1
    assert list(tmp_path.rglob("*.tgz")) == []


def test_a_job_task_archives_its_own_outputs_under_sdk_names(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A job task archives its element, its own results, data-json, log and quicklooks."""
    job = sim.up42.add_job(tasks=[{"quicklooks": ["ql.png"]}, {}])
    task = job.tasks[0]
    got = archive(sim, task_target(job), spool_dir=tmp_path)
    assert list(got) == [
        "task.json", "data.json", "scene__scene.tif", "data-json.geojson", "task.log",
        "quicklook_ql.png",
    ]  # fmt: skip
    assert json.loads(got["task.json"])["id"] == task.id
    assert {n: sha(got[n]) for n in ("data.json", "scene__scene.tif")} == {
        "data.json": task.results_sha256["data.json"],
        "scene__scene.tif": task.results_sha256["scene/scene.tif"],
    }
    assert sim.stats.count(route=SIGNED, task=task.id) == 1


def test_an_expired_signed_url_is_replaced_by_a_fresh_one(sim: SimulatorServer) -> None:
    """A signed URL that answers ExpiredToken is asked for again, and the fresh one works."""
    job = sim.up42.add_job(expired_downloads=2)
    got = archive(sim, job_target(job))
    assert sha(got["scene__scene.tif"]) == job.results.results_sha256["scene/scene.tif"]
    assert sim.stats.count(route=JOB + "/downloads/results/", task=job.id) == 3
    assert sim.stats.count(route=SIGNED, task=job.id) == 3


def test_signed_urls_that_keep_expiring_are_retryable(sim: SimulatorServer, tmp_path: Path) -> None:
    """Three refused URLs in a row fail the listing as retryable, leaving no spool behind."""
    job = sim.up42.add_job(expired_downloads=10)
    with pytest.raises(ProviderUnavailable, match="ExpiredToken"):
        archive(sim, job_target(job), spool_dir=tmp_path)
    assert sim.stats.count(route=SIGNED, task=job.id) == 3
    assert list(tmp_path.rglob("*.tgz")) == []


def test_the_signed_url_is_fetched_without_our_token(sim: SimulatorServer) -> None:
    """The results download goes out without an Authorization header (it would leak the token)."""
    job = sim.up42.add_job()
    sim.up42.configure({"tokens": []})  # any bearer on the signed route would now be a 401
    archive(sim, job_target(job))
    assert sim.up42.rejected == 0


@pytest.mark.parametrize(
    ("member", "error"),
    [
        ({"name": "/etc/cron.d/x"}, "points outside"),
        ({"name": "../../escape.sh"}, "points outside"),
        ({"name": "../evil", "kind": "symlink", "target": "/etc/passwd"}, "points outside"),
        ({"name": "a\\b.txt"}, "backslash"),
    ],
)
def test_unsafe_members_refuse_the_whole_tarball(
    sim: SimulatorServer, tmp_path: Path, member: dict[str, Any], error: str
) -> None:
    """Absolute paths, '..' (in any entry's name) and backslashes are OutputInvalid naming
    the member, and leave no spool."""
    job = sim.up42.add_job(tasks=[{"members": [{"name": "data.json"}, member]}])
    with pytest.raises(OutputInvalid, match=error):
        archive(sim, job_target(job), spool_dir=tmp_path)
    assert list(tmp_path.rglob("*.tgz")) == []


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        ({"results_max_members": 3}, "more than 3 members"),
        ({"results_max_bytes": 5000}, "more than 5000 bytes unpacked"),
    ],
)
def test_unpacking_limits_refuse_oversized_tarballs(
    sim: SimulatorServer, tmp_path: Path, limits: dict[str, int], error: str
) -> None:
    """More members or unpacked bytes than the settings allow is OutputInvalid."""
    members = [{"name": f"f{i}.bin", "size": 2000} for i in range(4)]
    job = sim.up42.add_job(tasks=[{"members": members}])
    with pytest.raises(OutputInvalid, match=error):
        archive(sim, job_target(job), spool_dir=tmp_path, **limits)


def test_a_tarball_announced_over_the_limit_is_not_downloaded(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A results download whose Content-Length exceeds what the limits allow is refused before
    a byte is spooled (the SDK filled the temp dir first)."""
    job = sim.up42.add_job(tasks=[{"members": [{"name": "big.bin", "size": 300_000}]}])
    with pytest.raises(OutputInvalid, match="over the limit"):
        archive(sim, job_target(job), spool_dir=tmp_path, results_max_bytes=100_000,
                results_max_members=10)  # fmt: skip
    assert list(tmp_path.rglob("*.tgz")) == []


def test_a_truncated_download_is_retryable_and_cleans_up(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A results download cut short is ProviderUnavailable and leaves no spool file."""
    job = sim.up42.add_job(tasks=[{"members": [{"name": "big.bin", "size": 200_000}]}])
    sim.inject(kind="truncate", keep_bytes=5000, route=SIGNED, task=job.id)
    with pytest.raises(ProviderUnavailable):
        archive(sim, job_target(job), spool_dir=tmp_path)
    assert list(tmp_path.rglob("*.tgz")) == []


def test_listing_again_replaces_the_previous_spool(sim: SimulatorServer, tmp_path: Path) -> None:
    """An archive retry lists again: the first listing's spool is deleted, one remains."""
    job = sim.up42.add_job()

    async def list_twice(provider: up42.Up42Provider) -> list[OutputRef]:
        await provider.list_outputs(job_target(job))
        return list(await provider.list_outputs(job_target(job)))

    call(sim, list_twice, spool_dir=tmp_path)
    assert len(list(tmp_path.rglob("*.tgz"))) == 1


def test_a_dead_workers_stale_spool_is_swept_and_a_live_one_kept(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """Spools nobody touched for six hours (a killed worker's) go at the next listing; a recent
    one in another process's directory stays."""
    dead, alive = tmp_path / "taskwarden-up42-dead", tmp_path / "taskwarden-up42-alive"
    dead.mkdir(), alive.mkdir()
    (dead / "old.tgz").write_bytes(b"x" * 100)
    (alive / "new.tgz").write_bytes(b"y" * 100)
    long_ago = time.time() - 7 * 3600
    os.utime(dead / "old.tgz", (long_ago, long_ago))
    os.utime(dead, (long_ago, long_ago))
    archive(sim, job_target(sim.up42.add_job()), spool_dir=tmp_path)
    assert not dead.exists()
    assert (alive / "new.tgz").exists()


# --- auth ------------------------------------------------------------------------------------


def test_an_early_expired_token_is_refreshed_once_and_the_call_retried(
    sim: SimulatorServer,
) -> None:
    """A 401 on a token UP42 dropped early costs one new token and one retry, not an error."""
    sim.up42.configure({"token_ttl": 1, "announced_ttl": 3600})
    job = sim.up42.add_job()

    async def two_checks(provider: up42.Up42Provider) -> Observation:
        await provider.fetch_status(job_target(job))
        sim.clock.advance(5)  # the token dies; the adapter still thinks it has an hour
        return await provider.fetch_status(job_target(job))

    seen = call(sim, two_checks)
    assert seen.remote is Remote.SUCCEEDED
    assert (sim.up42.token_grants, sim.up42.rejected) == (2, 1)
    assert sim.stats.count(route=JOB, task=job.id) == 3


def test_a_token_is_replaced_before_it_expires(sim: SimulatorServer) -> None:
    """With expires_in announced truthfully, the adapter renews in time and sees no 401."""
    sim.up42.configure({"token_ttl": 100})
    job = sim.up42.add_job()

    async def checks(provider: up42.Up42Provider) -> None:
        for _ in range(3):
            await provider.fetch_status(job_target(job))
        await asyncio.sleep(0)

    call(sim, checks)
    assert (sim.up42.token_grants, sim.up42.rejected) == (1, 0)


@pytest.mark.parametrize("shape", ["new", "old", "both"])
def test_both_token_response_shapes_are_read(sim: SimulatorServer, shape: str) -> None:
    """The token is found at access_token (newer SDKs) or data.accessToken (old ones)."""
    sim.up42.configure({"token_shape": shape, "announced_ttl": 0})
    job = sim.up42.add_job()
    assert status(sim, job_target(job)).remote is Remote.SUCCEEDED


def test_client_credentials_use_http_basic(sim: SimulatorServer) -> None:
    """project_id and api_key buy a token by the client-credentials grant."""
    job = sim.up42.add_job()
    seen = status(sim, job_target(job), project_id=PROJECT, api_key=SecretStr("sim-api-key"))
    assert seen.remote is Remote.SUCCEEDED
    assert sim.up42.token_grants == 1


@pytest.mark.parametrize(
    "credentials",
    [
        {"password": SecretStr("wrong-password")},
        {"username": None, "password": None, "project_id": PROJECT, "api_key": SecretStr("nope")},
    ],
)
def test_refused_credentials_are_permanent_and_not_echoed(
    sim: SimulatorServer, credentials: dict[str, Any]
) -> None:
    """A refused grant is CredentialsRejected quoting UP42, never the secret."""
    job = sim.up42.add_job()
    with pytest.raises(CredentialsRejected, match="Invalid user credentials") as caught:
        status(sim, job_target(job), **credentials)
    assert "wrong-password" not in str(caught.value) and "nope" not in str(caught.value)


def test_a_fixed_token_is_not_refreshed(sim: SimulatorServer) -> None:
    """A rejected fixed token is CredentialsRejected after one request, with no token call."""
    job = sim.up42.add_job()
    with pytest.raises(CredentialsRejected, match="Invalid or missing token"):
        status(sim, job_target(job), token=SecretStr("not-a-token"))
    assert (sim.stats.count(route=TOKEN), sim.stats.count(route=JOB)) == (0, 1)


# --- abort -----------------------------------------------------------------------------------


def test_abort_cancels_a_v1_job(sim: SimulatorServer) -> None:
    """abort() posts cancel/ (204); the job is CANCELLING, then CANCELLED."""
    job = sim.up42.add_job(outcome="never", cancelling_seconds=10)
    call(sim, lambda p: p.abort(job_target(job)))
    assert status(sim, job_target(job)).raw_status == "CANCELLING"
    sim.clock.advance(11)
    assert status(sim, job_target(job)).remote is Remote.CANCELLED


@pytest.mark.parametrize(
    ("kind", "error"), [("task", "cancel its job"), ("v2", "cannot be cancelled")]
)
def test_abort_is_refused_where_up42_cannot_cancel(
    sim: SimulatorServer, kind: str, error: str
) -> None:
    """A job task or a processing job cannot be cancelled: abort says so and sends nothing."""
    job = sim.up42.add_job(outcome="never")
    target = task_target(job) if kind == "task" else Target(sim.up42.add_processing().id)
    with pytest.raises(RequestRejected, match=error):
        call(sim, lambda p: p.abort(target))
    assert sim.stats.count(method="POST", route=JOB + "/cancel/") == 0
    assert sim.up42.status(job.id) == "RUNNING"


# --- transport and envelope errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"code": "NOT_FOUND", "message": "gone"}, RemoteNotFound),
        ({"code": "FORBIDDEN", "message": "not yours"}, CredentialsRejected),
        ({"code": "INTERNAL_SERVER_ERROR", "message": "oops"}, ProviderUnavailable),
        ("no such block", RequestRejected),
    ],
)
def test_a_v1_error_envelope_on_a_200_is_a_failure(error: Any, kind: type[Exception]) -> None:
    """{"data": null, "error": ...} answered with 200 raises from the error tree, quoting UP42."""
    request = httpx.Request("GET", "https://api.up42.com/projects/p/jobs/j")
    response = httpx.Response(200, json={"data": None, "error": error}, request=request)
    with pytest.raises(kind, match="UP42 said"):
        v1_data(response)


def test_an_empty_error_beside_data_is_not_a_failure() -> None:
    """The SDK's own fixtures answer {"data": ..., "error": {}}: that is a success."""
    request = httpx.Request("GET", "https://api.up42.com/projects/p/jobs/j")
    response = httpx.Response(200, json={"data": {"id": "j"}, "error": {}}, request=request)
    assert v1_data(response) == {"id": "j"}


def test_5xx_429_and_broken_bodies_are_retryable(sim: SimulatorServer) -> None:
    """503 with Retry-After, 429, a reset and malformed JSON are retryable; then it works."""
    job = sim.up42.add_job()
    sim.inject(kind="status", status=503, task=job.id, retry_after="4")
    with pytest.raises(ProviderUnavailable) as caught:
        status(sim, job_target(job))
    assert caught.value.retry_after == 4.0
    sim.inject(kind="rate_limit", task=job.id, retry_after="9")
    with pytest.raises(RateLimited):
        status(sim, job_target(job))
    for fault in ("reset", "malformed_json"):
        # a reset is retried in the call, so it must hit every attempt; malformed JSON is not
        count = 1 + HttpSettings().retries if fault == "reset" else 1
        sim.inject(kind=fault, task=job.id, route=JOB, count=count)
        with pytest.raises(ProviderUnavailable):
            status(sim, job_target(job))
    assert status(sim, job_target(job)).remote is Remote.SUCCEEDED
