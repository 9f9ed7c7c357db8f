"""The official ``earthdaily-earthone`` SDK (6.2) driven against the EarthOne simulator, unchanged,
through its own configuration (``EARTHONE_PLATFORM_URL``, ``EARTHONE_IAM_URL``): where they
disagree, the simulator is wrong. The SDK's settings and default clients are process-wide, so
this module has its own simulator and sets the SDK's environment once, before its first import.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from taskwarden.config import EarthOneSettings, HttpSettings, ProvidersSettings, Settings
from taskwarden.net.client import build_client
from taskwarden.providers.base import Target
from taskwarden.providers.earthone import adapter as eo
from taskwarden.simulator.earthone import EarthOneConfig, EarthOneSimulator
from taskwarden.simulator.server import SimulatorServer

# the SDK's own deprecation warnings are not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore")
FAST = {"interval": 0.05, "timeout": 20}
JOBS = "compute/v1/jobs"
TOKEN = "iam/token"


@dataclass
class Sdk:
    """The SDK's classes and exceptions."""

    Auth: Any
    Job: Any
    JobStatus: Any
    Function: Any
    ComputeClient: Any
    CatalogClient: Any
    errors: Any


@pytest.fixture(scope="module")
def sdk_modules(_module_sim: SimulatorServer) -> Iterator[Sdk]:
    """The SDK imported with its settings (frozen at first use) pointing at this module's
    simulator, and its credentials in its own environment variables."""
    pytest.importorskip("earthdaily.earthone", reason="earthdaily-earthone is a test extra")
    with pytest.MonkeyPatch.context() as env, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, value in _module_sim.earthone.sdk_env(_module_sim.url).items():
            env.setenv(key, value)
        env.setenv("EARTHONE_CLIENT_ID", "sim-client")
        env.setenv("EARTHONE_REFRESH_TOKEN", "sim-refresh-token")
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.delenv(proxy, raising=False)  # the SDK's adapter ignores NO_PROXY
        config = importlib.import_module("earthdaily.earthone.config")
        config.get_settings()  # freeze them now, while the environment points here
        auth = importlib.import_module("earthdaily.earthone.auth")
        compute = importlib.import_module("earthdaily.earthone.compute")
        catalog = importlib.import_module("earthdaily.earthone.catalog")
        errors = importlib.import_module("earthdaily.earthone.exceptions")
        yield Sdk(auth.Auth, compute.Job, compute.JobStatus, compute.Function,
                  compute.ComputeClient, catalog.CatalogClient, errors)  # fmt: skip


@pytest.fixture
def cloud(server: SimulatorServer) -> EarthOneSimulator:
    server.earthone.configure(EarthOneConfig().model_dump())
    return server.earthone


@pytest.fixture
def sdk(sdk_modules: Sdk, cloud: EarthOneSimulator) -> Sdk:
    """A fresh default Auth from the environment (no token file) and fresh default clients."""
    m = sdk_modules
    m.Auth.set_default_auth(m.Auth(token_info_path=None))
    m.ComputeClient.clear_all_default_clients()
    m.CatalogClient.clear_all_default_clients()
    return m


def test_job_get_and_wait_for_completion(
    server: SimulatorServer, cloud: EarthOneSimulator, sdk: Sdk
) -> None:
    """Job.get parses every field; wait_for_completion refreshes until a terminal status."""
    job = cloud.add_job(pending_seconds=0.3, running_seconds=0.4, peak_memory_bytes=123_456)
    seen = sdk.Job.get(job.job_id)
    assert seen.status == sdk.JobStatus.PENDING
    assert seen.function_id == job.function_id and seen.execution_count == 0
    seen.wait_for_completion(**FAST)
    assert seen.status == sdk.JobStatus.SUCCESS and seen.status in sdk.JobStatus.terminal()
    assert (seen.exit_code, seen.error_reason, seen.execution_count) == (0, None, 1)
    assert seen.statistics.memory.peak_bytes == 123_456
    assert seen.last_completion_date >= seen.last_execution_date >= seen.creation_date
    assert server.stats.count(route=f"{JOBS}/{{job_id}}", task=job.job_id) >= 3
    timed = sdk.Job.get(job.job_id, include=["timings"])
    assert timed.provisioning_time is not None


def test_result_and_result_blob_read_the_catalog_blob(cloud: EarthOneSimulator, sdk: Sdk) -> None:
    """Job.result() returns the stored bytes (JSON decoded when it is JSON), result_blob() the
    catalog Blob with its size; a job that stored nothing has None for both."""
    raw = cloud.add_job(file_size=70_000)
    got = sdk.Job.get(raw.job_id).result()
    assert hashlib.sha256(got).hexdigest() == raw.result_sha256
    blob = sdk.Job.get(raw.job_id).result_blob()
    assert (blob.size_bytes, blob.storage_type, blob.name) == (
        70_000, "compute", f"{raw.function_id}/{raw.job_id}"
    )  # fmt: skip
    assert blob.namespace == cloud.namespace
    assert blob.data() == got  # Blob.data(): the same download, with if-match
    value = cloud.add_job(result="json", result_json={"ndvi": [0.1, 0.2]})
    assert sdk.Job.get(value.job_id).result() == {"ndvi": [0.1, 0.2]}
    nothing = cloud.add_job(result="none")
    assert sdk.Job.get(nothing.job_id).result() is None
    assert sdk.Job.get(nothing.job_id).result_blob() is None


def test_a_failed_job_has_its_reason_exit_code_and_traceback(
    cloud: EarthOneSimulator, sdk: Sdk
) -> None:
    """A failure is terminal (wait_for_completion returns), result() refuses, the log holds
    the traceback; a platform timeout is terminal too."""
    job = cloud.add_job(running_seconds=0.2, outcome="failure", error_reason="KeyError: 'b04'",
                        exit_code=3)  # fmt: skip
    seen = sdk.Job.get(job.job_id)
    seen.wait_for_completion(**FAST)
    assert (seen.status, seen.error_reason, seen.exit_code) == (
        sdk.JobStatus.FAILURE, "KeyError: 'b04'", 3
    )  # fmt: skip
    with pytest.raises(ValueError, match="has not completed successfully"):
        seen.result()
    log = seen.log(timestamps=False)
    assert "Traceback (most recent call last):" in log and log.endswith("KeyError: 'b04'")
    late = cloud.add_job(outcome="failure", failure_status="timeout")
    assert sdk.Job.get(late.job_id).status == sdk.JobStatus.TIMEOUT


def test_the_log_is_what_the_adapter_archives(
    server: SimulatorServer, cloud: EarthOneSimulator, sdk: Sdk
) -> None:
    """Job.log() (in the local time zone) and the adapter's log.txt (in UTC) are the same
    lines at the same instants."""
    job = cloud.add_job(running_seconds=0, log_lines=["first", "second: ünïcode", "third"])
    printed = sdk.Job.get(job.job_id).log().split("\n")
    archived = archive_file(server, f"job:{job.job_id}", "log.txt").decode().split("\n")
    assert len(printed) == len(archived) == 3
    for mine, theirs in zip(archived, printed, strict=True):
        (my_date, my_text), (their_date, their_text) = _split(mine), _split(theirs)
        assert my_text == their_text
        assert my_date.astimezone(UTC) == their_date.astimezone(UTC)


def test_the_result_is_what_the_adapter_archives(
    server: SimulatorServer, cloud: EarthOneSimulator, sdk: Sdk
) -> None:
    """The adapter's archived result is byte for byte what Job.result() returns."""
    job = cloud.add_job(file_size=300_000)
    assert archive_file(server, f"job:{job.job_id}", "result") == sdk.Job.get(job.job_id).result()


def test_cancel_goes_through_cancel_and_canceling(cloud: EarthOneSimulator, sdk: Sdk) -> None:
    """Job.cancel() on a running job answers `cancel`; it ends `canceled`; a pending job is
    `canceled` at once."""
    running = cloud.add_job(running_seconds=60, cancel_seconds=0.4)
    seen = sdk.Job.get(running.job_id)
    seen.cancel()
    assert seen.status == sdk.JobStatus.CANCEL
    seen.wait_for_completion(**FAST)
    assert seen.status == sdk.JobStatus.CANCELED
    waiting = cloud.add_job(pending_seconds=60)
    pending = sdk.Job.get(waiting.job_id)
    pending.cancel()
    assert pending.status == sdk.JobStatus.CANCELED


def test_function_jobs_are_listed_page_by_page(
    server: SimulatorServer, cloud: EarthOneSimulator, sdk: Sdk
) -> None:
    """Function.jobs iterates 250 jobs over three pages (the cursor alone on later pages),
    count() asks limit=0, Job.list pages by its page_size."""
    function = cloud.add_function(jobs=250, job={"running_seconds": 0})
    fn = sdk.Function.get(function.function_id)
    assert fn.namespace == cloud.namespace
    before = server.stats.count(route=JOBS)
    ids = [job.id for job in fn.jobs]
    assert ids == function.jobs
    assert server.stats.count(route=JOBS) - before == 3
    assert fn.jobs.count() == 250
    failed = fn.jobs.filter(sdk.Job.status == sdk.JobStatus.FAILURE).count()
    assert failed == 0
    listed = sdk.Job.list(page_size=40)
    assert sum(1 for job in listed if job.function_id == function.function_id) == 250


def test_function_statistics_and_wait_for_completion(cloud: EarthOneSimulator, sdk: Sdk) -> None:
    """refresh(includes=["job.statistics"]) counts jobs by status; wait_for_completion ends
    when none is pending, running or being cancelled, failures included."""
    function = cloud.add_function(jobs=6, failures=2, stagger=0.1, build_seconds=0.2,
                                  job={"running_seconds": 0.2})  # fmt: skip
    fn = sdk.Function.get(function.function_id)
    assert fn.status == "building"
    fn.wait_for_completion(**FAST)
    fn.refresh(includes=["job.statistics"])
    assert fn.job_statistics == {"success": 4, "failure": 2}


def test_a_function_that_failed_to_build_raises(cloud: EarthOneSimulator, sdk: Sdk) -> None:
    """build_failed makes wait_for_completion raise; the build log is gzip the SDK inflates."""
    function = cloud.add_function(outcome="build_failed")
    fn = sdk.Function.get(function.function_id)
    with pytest.raises(RuntimeError, match="failed to build"):
        fn.wait_for_completion(**FAST)
    assert "build failed" in fn.build_log()


def test_cancel_jobs_cancels_every_job_of_a_function(cloud: EarthOneSimulator, sdk: Sdk) -> None:
    """Function.cancel_jobs() posts the function filter; its jobs end canceled and the
    function completes."""
    function = cloud.add_function(jobs=5, job={"running_seconds": 60, "cancel_seconds": 0.2})
    fn = sdk.Function.get(function.function_id)
    answered = fn.cancel_jobs()
    assert {job.id for job in answered} == set(function.jobs)
    fn.wait_for_completion(**FAST)
    assert {sdk.Job.get(j).status for j in function.jobs} == {sdk.JobStatus.CANCELED}


def test_unknown_ids_are_not_found(cloud: EarthOneSimulator, sdk: Sdk) -> None:
    """A job or function the platform does not know is the SDK's NotFoundError."""
    with pytest.raises(sdk.errors.NotFoundError, match="Job not found"):
        sdk.Job.get("no-such-job")
    with pytest.raises(sdk.errors.NotFoundError):
        sdk.Function.get("no-such-function")


def test_one_token_serves_many_calls(
    server: SimulatorServer, cloud: EarthOneSimulator, sdk: Sdk
) -> None:
    """Auth exchanges the client id and refresh token once at iam/token for many calls: the
    simulator's JWTs live an hour, past the SDK's 500 s leeway."""
    job = cloud.add_job()
    for _ in range(5):
        sdk.Job.get(job.job_id)
    assert server.stats.count(route=TOKEN) == 1
    assert cloud.counters == {"issued": 1}
    assert sdk.Auth.get_default_auth().payload["userid"] == cloud.config.userid


def test_a_short_token_is_bought_before_every_call(
    server: SimulatorServer, cloud: EarthOneSimulator, sdk: Sdk
) -> None:
    """A 100 s JWT (under the SDK's leeway) makes the SDK renew before every call: the
    simulator's exp claim is what the SDK reads."""
    cloud.configure({"token_ttl": 100})
    job = cloud.add_job()
    for _ in range(3):
        sdk.Job.get(job.job_id)
    assert server.stats.count(route=TOKEN) == 3


def test_auth_is_required_and_enforced(cloud: EarthOneSimulator, sdk: Sdk) -> None:
    """A revoked token is a 401 the SDK does not retry; a wrong refresh token is refused."""
    job = cloud.add_job()
    sdk.Job.get(job.job_id)
    cloud.iam.revoke()
    with pytest.raises(sdk.errors.UnauthorizedError):
        sdk.Job.get(job.job_id)
    wrong = sdk.Auth(client_id="sim-client", refresh_token="wrong", token_info_path=None)
    with pytest.raises(sdk.errors.ClientError):
        _ = wrong.token
    assert cloud.counters["refused"] == 1


# --- helpers ----------------------------------------------------------------------------------


def archive_file(server: SimulatorServer, remote_id: str, name: str) -> bytes:
    """What the adapter would archive as ``name`` for ``remote_id``."""
    env = server.earthone.env(server.url)
    p = "TASKWARDEN_PROVIDERS__EARTHONE__"
    settings = Settings(
        providers=ProvidersSettings(
            earthone=EarthOneSettings(
                platform_url=env[f"{p}PLATFORM_URL"],
                iam_url=env[f"{p}IAM_URL"],
                client_id=env[f"{p}CLIENT_ID"],
                refresh_token=env[f"{p}REFRESH_TOKEN"],
            )
        ),
        http=HttpSettings(max_connections=4),
    )
    target = Target(remote_id)

    async def fetch() -> bytes:
        async with build_client(settings.http) as client:
            provider = eo.build(settings, client)
            ref = next(r for r in await provider.list_outputs(target) if r.name == name)
            async with provider.open_output(target, ref) as stream:
                return b"".join([chunk async for chunk in stream.chunks])

    return asyncio.run(fetch())


def _split(line: str) -> tuple[datetime, str]:
    day, clock, text = line.split(" ", 2)
    return datetime.fromisoformat(f"{day} {clock}"), text
