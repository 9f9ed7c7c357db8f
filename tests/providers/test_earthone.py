"""The EarthOne adapter against the EarthOne simulator over real HTTP on loopback: states, the
requests a check costs, outputs, diagnostics, abort and auth."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from taskwarden.config import EarthOneSettings, HttpSettings, ProvidersSettings, Settings
from taskwarden.errors import CredentialsRejected, RemoteNotFound, RequestRejected, UrlRefused
from taskwarden.lifecycle import Observation, Remote
from taskwarden.net.client import build_client
from taskwarden.net.urls import Guard, policy_for
from taskwarden.providers.base import Target
from taskwarden.providers.bearer import TokenSource
from taskwarden.providers.earthone import adapter as eo
from taskwarden.simulator.earthone import EarthOneConfig, EarthOneSimulator
from taskwarden.simulator.server import SimulatorServer

T = TypeVar("T")
P = "earthone"
JOB = "compute/v1/jobs/{job_id}"
JOBS = "compute/v1/jobs"
FUNCTION = "compute/v1/functions/{function_id}"
TOKEN = "iam/token"
SIGNED = "signed/{blob_id:path}"


@pytest.fixture
def cloud(server: SimulatorServer) -> EarthOneSimulator:
    """The module simulator's EarthOne, back to its default config."""
    server.earthone.configure(EarthOneConfig().model_dump())
    return server.earthone


def settings_for(server: SimulatorServer, **overrides: Any) -> Settings:
    env = server.earthone.env(server.url)
    v = "TASKWARDEN_PROVIDERS__EARTHONE__"
    fields: dict[str, Any] = {
        "platform_url": env[f"{v}PLATFORM_URL"],
        "iam_url": env[f"{v}IAM_URL"],
        "client_id": env[f"{v}CLIENT_ID"],
        "refresh_token": SecretStr(env[f"{v}REFRESH_TOKEN"]),
        **overrides,
    }
    return Settings(
        providers=ProvidersSettings(earthone=EarthOneSettings(**fields)),
        http=HttpSettings(read_timeout=5.0, connect_timeout=2.0, max_connections=4),
    )


def call(
    server: SimulatorServer,
    action: Callable[[eo.EarthOneProvider], Awaitable[T]],
    **overrides: Any,
) -> T:
    """Run ``action`` on a provider built as a worker builds it, on a fresh client and loop."""
    settings = settings_for(server, **overrides)

    async def main() -> T:
        async with build_client(settings.http) as client:
            return await action(eo.build(settings, client))

    return asyncio.run(main())


def status(server: SimulatorServer, remote_id: str) -> Observation:
    return call(server, lambda p: p.fetch_status(Target(remote_id)))


def archive(server: SimulatorServer, remote_id: str, diagnostics: bool = False) -> dict[str, bytes]:
    """Every output (or diagnostic) by name, read through open_output as the archive does."""

    async def everything(provider: eo.EarthOneProvider) -> dict[str, bytes]:
        target = Target(remote_id)
        listed = provider.list_diagnostics if diagnostics else provider.list_outputs
        found: dict[str, bytes] = {}
        for ref in await listed(target):
            async with provider.open_output(target, ref) as stream:
                body = b"".join([chunk async for chunk in stream.chunks])
            assert stream.length in (None, len(body)), ref.name
            found[ref.name] = body
        return found

    return call(server, everything)


# --- jobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "remote", "word"),
    [
        ({"pending_seconds": 3600}, Remote.PENDING, "pending"),
        ({"running_seconds": 3600}, Remote.RUNNING, "running"),
        ({}, Remote.SUCCEEDED, "success"),
        ({"outcome": "failure"}, Remote.FAILED, "failure"),
        ({"outcome": "failure", "failure_status": "timeout"}, Remote.FAILED, "timeout"),
        ({"outcome": "aborted"}, Remote.CANCELLED, "canceled"),
    ],
)
def test_job_states_map_onto_the_canonical_lifecycle(
    cloud: EarthOneSimulator,
    server: SimulatorServer,
    script: dict[str, Any],
    remote: Remote,
    word: str,
) -> None:
    """Each JobStatus word maps, and a check is one GET of the job."""
    job = cloud.add_job(**script)
    seen = status(server, f"job:{job.job_id}")
    assert (seen.remote, seen.raw_status) == (remote, word)
    assert server.stats.count(platform=P, route=JOB) == 1
    assert server.stats.count(platform=P) == 2  # and the token


@pytest.mark.parametrize("step", ["cancel", "canceling"])
def test_cancellation_steps_are_still_running(
    cloud: EarthOneSimulator, server: SimulatorServer, step: str
) -> None:
    """`cancel` and `canceling` are not terminal (JobStatus.terminal()): the job runs on."""
    job = cloud.add_job(running_seconds=3600, cancel_seconds=100)
    job.cancel(server.clock.now())
    server.clock.advance(0 if step == "cancel" else 60)
    seen = status(server, f"job:{job.job_id}")
    assert (seen.remote, seen.raw_status) == (Remote.RUNNING, step)


def test_a_failure_says_reason_exit_code_attempts_runtime_and_memory(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """The failure message and the watch's details carry what the job document says; the
    platform's timestamps become the observation's."""
    job = cloud.add_job(running_seconds=31, outcome="failure", error_reason="MemoryError",
                        exit_code=137, execution_count=3, peak_memory_bytes=5 * 2**30)  # fmt: skip
    server.clock.advance(31)
    seen = status(server, f"job:{job.job_id}")
    assert seen.message == (
        "job failed: MemoryError; exit_code 137; execution_count 3; runtime 31 s;"
        " peak memory 5368709120 bytes (5120.0 MiB)"
    )
    assert seen.details is not None
    assert {k: seen.details[k] for k in ("error_reason", "exit_code", "execution_count")} == {
        "error_reason": "MemoryError", "exit_code": 137, "execution_count": 3
    }  # fmt: skip
    assert seen.details["statistics"]["memory"]["peak_bytes"] == 5 * 2**30
    assert "timeseries" not in json.dumps(seen.details)
    assert seen.remote_created_at == pytest.approx(job.epoch, abs=1e-3)
    assert seen.remote_started_at == pytest.approx(job.epoch, abs=1e-3)
    assert seen.remote_ended_at == pytest.approx(job.epoch + 31, abs=1e-3)


def test_a_platform_timeout_is_a_failure_that_says_whose_timeout(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """status `timeout` is the function's limit: failed, and the message says it is not the
    watch's own timeout."""
    job = cloud.add_job(outcome="failure", failure_status="timeout")
    seen = status(server, f"job:{job.job_id}")
    assert seen.remote is Remote.FAILED
    assert seen.message is not None
    assert seen.message.startswith("the platform timed the job out (status timeout: its")
    assert "not this watch's timeout" in seen.message


def test_an_unknown_job_is_not_found(cloud: EarthOneSimulator, server: SimulatorServer) -> None:
    """A 404 for the job is RemoteNotFound, in the platform's words."""
    with pytest.raises(RemoteNotFound, match=r"job nope not found .*: Job not found"):
        status(server, "job:nope")


def test_an_unknown_status_word_is_kept_raw(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A word outside JobStatus is UNKNOWN and recorded as the platform said it."""
    job = cloud.add_job(running_seconds=3600)
    server.inject(kind="unknown_status", platform=P, route=JOB, word="queued")
    seen = status(server, f"job:{job.job_id}")
    assert (seen.remote, seen.raw_status) == (Remote.UNKNOWN, "queued")


@pytest.mark.parametrize(
    ("remote_id", "params", "said"),
    [
        ("abc", {}, "remote_id must be job:<id> or function:<id>"),
        ("task:abc", {}, "remote_id must be job:<id> or function:<id>"),
        ("job:", {}, "is not an EarthOne job id"),
        ("job:a/b", {}, "is not an EarthOne job id"),
        ("function:a b", {}, "is not an EarthOne function id"),
        ("job:abc", {"kind": "job"}, "no params are taken"),
    ],
)
def test_bad_registrations_are_refused_before_any_request(
    server: SimulatorServer, remote_id: str, params: dict[str, Any], said: str
) -> None:
    """validate() refuses what names no job or function, without the network."""
    with pytest.raises(RequestRejected, match="invalid earthone registration") as refused:
        eo.validate(settings_for(server), Target(remote_id, params))
    assert said in str(refused.value)


# --- functions --------------------------------------------------------------------------------


def test_a_function_check_is_one_request_however_many_jobs(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A 500-job function is checked with one GET of the function and its job statistics;
    progress is the share of terminal jobs."""
    function = cloud.add_function(jobs=500, stagger=1, job={"running_seconds": 0})
    server.clock.advance(99.5)  # jobs 0..99 ended
    seen = status(server, f"function:{function.function_id}")
    assert (seen.remote, seen.raw_status, seen.progress) == (Remote.RUNNING, "ready", 0.2)
    assert seen.details == {"function_status": "ready", "jobs": 500,
                            "job_statistics": {"pending": 400, "success": 100}}  # fmt: skip
    print(f"\n500-job function: {server.stats.count(platform=P, route=FUNCTION)} request(s)"
          f" per check, {server.stats.count(platform=P, route=JOBS)} listing")  # fmt: skip
    assert server.stats.count(platform=P, route=FUNCTION) == 1
    assert server.stats.count(platform=P, route=JOBS) == 0


def test_statistics_of_active_jobs_only_add_one_count(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """Statistics that count only pending..canceling (all the SDK reads) cost one limit=0
    count per check, so progress is still the share of terminal jobs."""
    cloud.configure({"statistics_words": "active"})
    function = cloud.add_function(jobs=10, stagger=1, job={"running_seconds": 0})
    server.clock.advance(3.5)
    seen = status(server, f"function:{function.function_id}")
    assert (seen.remote, seen.progress) == (Remote.RUNNING, 0.4)
    assert server.stats.count(platform=P, route=JOBS) == 1


@pytest.mark.parametrize(
    ("spec", "remote", "word"),
    [
        ({"build_seconds": 3600}, Remote.PENDING, "building"),
        ({"outcome": "build_failed"}, Remote.FAILED, "build_failed"),
        ({"jobs": 3, "failures": 1}, Remote.SUCCEEDED, "ready"),
        ({}, Remote.SUCCEEDED, "ready"),  # no jobs: wait_for_completion returns at once
    ],
)
def test_function_states_follow_wait_for_completion(
    cloud: EarthOneSimulator,
    server: SimulatorServer,
    spec: dict[str, Any],
    remote: Remote,
    word: str,
) -> None:
    """Building waits, build_failed fails, and all jobs terminal (failures too) succeeds."""
    function = cloud.add_function(**spec)
    seen = status(server, f"function:{function.function_id}")
    assert (seen.remote, seen.raw_status) == (remote, word)


def test_a_finished_function_says_how_its_jobs_ended(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """The success message counts the terminal words."""
    function = cloud.add_function(jobs=5, failures=2)
    assert status(server, f"function:{function.function_id}").message == (
        "all 5 jobs ended: 2 failure, 3 success"
    )


# --- outputs ----------------------------------------------------------------------------------


def test_a_job_archives_document_result_and_log(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """job.json, the result blob's bytes (streamed, never with our token) and log.txt."""
    job = cloud.add_job(file_size=200_000, log_lines=["reading scene", "done"])
    files = archive(server, f"job:{job.job_id}")
    assert list(files) == ["job.json", "result", "log.txt"]
    assert json.loads(files["job.json"])["status"] == "success"
    assert hashlib.sha256(files["result"]).hexdigest() == job.result_sha256
    lines = files["log.txt"].decode().split("\n")
    assert [line.split(" ", 2)[2] for line in lines] == ["reading scene", "done"]
    assert all(line.split(" ", 2)[1].endswith("+00:00") for line in lines)
    assert server.stats.count(platform=P, route=SIGNED, task=job.job_id) == 1


def test_a_job_without_a_result_says_so(cloud: EarthOneSimulator, server: SimulatorServer) -> None:
    """A success that stored nothing archives no-result.json naming the blob it looked for."""
    job = cloud.add_job(result="none")
    files = archive(server, f"job:{job.job_id}")
    assert list(files) == ["job.json", "no-result.json", "log.txt"]
    note = json.loads(files["no-result.json"])
    assert note["result"] is None
    assert note["blob_id"] == f"compute/{cloud.namespace}/{job.function_id}/{job.job_id}"


def test_a_function_archives_one_folder_per_job(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """function.json, jobs.json, and each job's document, result (or none) and log, listed
    over pages of the job search."""
    function = cloud.add_function(jobs=7, failures=2, job={"file_size": 1000})
    files = call_archive_paged(server, function.function_id, page_size=3)
    assert json.loads(files["function.json"])["id"] == function.function_id
    summary = json.loads(files["jobs.json"])["jobs"]
    assert [row["status"] for row in summary] == ["success"] * 5 + ["failure"] * 2
    first, last = function.jobs[0], function.jobs[-1]
    assert hashlib.sha256(files[f"{first}/result"]).hexdigest() == cloud.jobs[first].result_sha256
    assert f"{last}/result" not in files and f"{last}/no-result.json" not in files
    assert b"Traceback" in files[f"{last}/log.txt"]
    assert len(files) == 2 + 5 * 3 + 2 * 2
    assert server.stats.count(platform=P, route=JOBS) == 3  # 7 jobs, pages of 3


def call_archive_paged(
    server: SimulatorServer, function_id: str, page_size: int
) -> dict[str, bytes]:
    async def everything(provider: eo.EarthOneProvider) -> dict[str, bytes]:
        target = Target(f"function:{function_id}")
        found = {}
        for ref in await provider.list_outputs(target):
            async with provider.open_output(target, ref) as stream:
                found[ref.name] = b"".join([chunk async for chunk in stream.chunks])
        return found

    return call(server, everything, page_size=page_size)


def test_a_truncated_result_download_is_an_error(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A signed download cut short fails the output instead of archiving a prefix."""
    job = cloud.add_job(file_size=600_000)
    server.inject(kind="truncate", platform=P, route=SIGNED, keep_bytes=1000, count=None)
    with pytest.raises(Exception, match="600000") as failed:
        archive(server, f"job:{job.job_id}")
    assert type(failed.value).__name__ in ("ProviderUnavailable", "OutputInvalid")


# --- diagnostics ------------------------------------------------------------------------------


def test_a_failed_job_leaves_its_document_and_traceback(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """list_diagnostics: the job document (error_reason, exit code) and the log with the
    stacktrace an SDK user would read."""
    job = cloud.add_job(outcome="failure", error_reason="ZeroDivisionError: division by zero")
    files = archive(server, f"job:{job.job_id}", diagnostics=True)
    assert list(files) == ["job.json", "log.txt"]
    doc = json.loads(files["job.json"])
    assert (doc["error_reason"], doc["exit_code"]) == ("ZeroDivisionError: division by zero", 1)
    log = files["log.txt"].decode()
    assert "Traceback (most recent call last):" in log
    assert log.endswith("ZeroDivisionError: division by zero")


def test_a_job_cancelled_before_it_ran_leaves_no_log(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A job canceled while pending never ran: its document only."""
    job = cloud.add_job(pending_seconds=3600)
    job.cancel(server.clock.now())
    assert list(archive(server, f"job:{job.job_id}", diagnostics=True)) == ["job.json"]


def test_a_function_that_failed_to_build_leaves_its_build_log(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A build_failed function: its document and the build log, gunzipped."""
    function = cloud.add_function(outcome="build_failed")
    files = archive(server, f"function:{function.function_id}", diagnostics=True)
    assert list(files) == ["function.json", "build.log"]
    assert files["build.log"] == function.build_log()


# --- abort ------------------------------------------------------------------------------------


def test_abort_cancels_a_job(cloud: EarthOneSimulator, server: SimulatorServer) -> None:
    """abort posts jobs/{id}/cancel; the job goes cancel → canceling → canceled."""
    job = cloud.add_job(running_seconds=3600, cancel_seconds=2)
    call(server, lambda p: p.abort(Target(f"job:{job.job_id}")))
    assert server.stats.count(platform=P, method="POST", task=job.job_id) == 1
    assert job.status(server.clock.now()) == "cancel"
    server.clock.advance(2)
    assert status(server, f"job:{job.job_id}").remote is Remote.CANCELLED


def test_abort_cancels_every_job_of_a_function(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A function's abort is Function.cancel_jobs(): one POST for all its jobs."""
    function = cloud.add_function(jobs=20, job={"running_seconds": 3600, "cancel_seconds": 0})
    other = cloud.add_job(running_seconds=3600)
    call(server, lambda p: p.abort(Target(f"function:{function.function_id}")))
    assert server.stats.count(platform=P, method="POST", route=f"{JOBS}/cancel") == 1
    now = server.clock.now()
    assert {cloud.jobs[j].status(now) for j in function.jobs} == {"canceled"}
    assert other.status(now) == "running"
    assert status(server, f"function:{function.function_id}").remote is Remote.SUCCEEDED


# --- auth -------------------------------------------------------------------------------------


def test_one_token_serves_many_checks(cloud: EarthOneSimulator, server: SimulatorServer) -> None:
    """Twenty concurrent checks buy one JWT at iam/token."""
    jobs = [cloud.add_job() for _ in range(20)]

    async def many(provider: eo.EarthOneProvider) -> list[Observation]:
        return await asyncio.gather(
            *(provider.fetch_status(Target(f"job:{j.job_id}")) for j in jobs)
        )

    assert {o.remote for o in call(server, many)} == {Remote.SUCCEEDED}
    assert cloud.counters == {"issued": 1}


def test_a_token_is_renewed_before_it_expires(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """With 60 s JWTs the adapter renews at half-life: no request meets a 401, and the
    simulator does refuse an expired token."""
    cloud.configure({"token_ttl": 60})
    job = cloud.add_job()
    settings = settings_for(server)
    eo_settings = settings.providers.earthone

    async def across_expiry() -> None:
        async with build_client(settings.http) as client:
            provider = eo.build(settings, client)
            provider.api.tokens = TokenSource(
                client, provider=P, url=f"{eo_settings.iam_url}/token",
                client_id=eo_settings.client_id, refresh_token=eo_settings.refresh_token,
                leeway=eo_settings.refresh_leeway,
                clock=lambda: server.clock.epoch(server.clock.now()),
            )  # fmt: skip
            for _ in range(4):
                await provider.fetch_status(Target(f"job:{job.job_id}"))
                server.clock.advance(25)

    asyncio.run(across_expiry())
    assert cloud.counters.get("unauthorized", 0) == 0
    assert cloud.counters["issued"] == 2  # at 0 s, then past 30 s; good until 90 s


def test_a_revoked_token_costs_one_401_and_one_refresh(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """After a revocation ten concurrent checks each see one 401 and share one new token."""
    jobs = [cloud.add_job() for _ in range(10)]

    async def revoked(provider: eo.EarthOneProvider) -> list[Observation]:
        await provider.fetch_status(Target(f"job:{jobs[0].job_id}"))
        cloud.iam.revoke()
        return await asyncio.gather(
            *(provider.fetch_status(Target(f"job:{j.job_id}")) for j in jobs)
        )

    assert {o.remote for o in call(server, revoked)} == {Remote.SUCCEEDED}
    assert (cloud.counters["issued"], cloud.counters["unauthorized"]) == (2, 10)


def test_a_refused_refresh_token_is_credentials_rejected_without_quoting_it(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A wrong refresh token (given as the SDK's client secret) is permanent and unquoted."""
    job = cloud.add_job()
    with pytest.raises(CredentialsRejected, match="refresh token refused") as refused:
        call(server, lambda p: p.fetch_status(Target(f"job:{job.job_id}")),
             refresh_token=None, client_secret=SecretStr("wrong-secret"))  # fmt: skip
    assert "wrong-secret" not in str(refused.value)
    assert "invalid_grant" in str(refused.value)


def guarded(server: SimulatorServer, remote_id: str, **overrides: Any) -> dict[str, bytes]:
    """Archive ``remote_id`` with the worker's URL guard installed on the client."""
    settings = settings_for(server, **overrides)

    async def main() -> dict[str, bytes]:
        async with build_client(settings.http) as client:
            Guard(policy_for(settings, P)).install(client)
            provider = eo.build(settings, client)
            target, found = Target(remote_id), {}
            for ref in await provider.list_outputs(target):
                async with provider.open_output(target, ref) as stream:
                    found[ref.name] = b"".join([chunk async for chunk in stream.chunks])
            return found

    return asyncio.run(main())


def test_the_urls_the_operator_set_are_trusted_and_signed_urls_are_checked(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """Compute, catalog and IAM are trusted; a signed URL on another host must be in
    OUTPUT_HOSTS and public, and the refusal never shows its signature."""
    assert {o[1] for o in policy_for(Settings(), P).trusted} == {
        "platform.production.earthone.earthdaily.com", "iam.production.earthone.earthdaily.com"
    }  # fmt: skip
    cloud.configure({"storage_host": "localhost"})
    job = cloud.add_job(file_size=10)
    with pytest.raises(UrlRefused, match="OUTPUT_HOSTS") as outside:
        guarded(server, f"job:{job.job_id}", output_hosts=["*.googleapis.com"])
    assert "signature" not in str(outside.value)
    with pytest.raises(UrlRefused, match=r"localhost .* loopback.*EARTHONE__ALLOW_PRIVATE"):
        guarded(server, f"job:{job.job_id}", allow_private_addresses=False)
    allowed = guarded(server, f"job:{job.job_id}", allow_private_addresses=True)
    assert len(allowed["result"]) == 10
    assert server.stats.count(platform=P, route=SIGNED) == 1


def test_settings_follow_the_sdk_environments() -> None:
    """The env switch picks the SDK's URLs; an explicit URL wins; client_secret is the refresh
    token; a pair set by half is refused."""
    default = EarthOneSettings()
    assert (default.compute_url, default.catalog_url, default.iam_url) == (
        "https://platform.production.earthone.earthdaily.com/compute/v1",
        "https://platform.production.earthone.earthdaily.com/metadata/v1/catalog/v2",
        "https://iam.production.earthone.earthdaily.com",
    )
    testing = EarthOneSettings(env="testing", compute_url="http://127.0.0.1:9/c/")
    assert (testing.iam_url, testing.compute_url) == (
        "https://iam.dev.earthone.earthdaily.com", "http://127.0.0.1:9/c"
    )  # fmt: skip
    secret = EarthOneSettings(client_id="me", client_secret=SecretStr("s"))
    assert secret.refresh_token is not None and secret.refresh_token.get_secret_value() == "s"
    with pytest.raises(ValueError, match="CLIENT_ID and TASKWARDEN_PROVIDERS__EARTHONE__REFRESH"):
        EarthOneSettings(client_id="me")
    with pytest.raises(ValueError, match="they differ"):
        EarthOneSettings(client_id="me", refresh_token=SecretStr("a"), client_secret=SecretStr("b"))
    with pytest.raises(ValueError, match="Input should be 'production', 'staging'"):
        EarthOneSettings(env="freemium")  # type: ignore[arg-type]
