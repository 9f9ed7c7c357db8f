"""The official ``descarteslabs`` SDK (1.x, the last with ``descarteslabs.vectors``) driven against
the simulator: where they disagree, the simulator is wrong.

The SDK pins ``numpy<1.23``, which has no wheel for this project's Python, so it is installed
without its dependencies (see docs/providers/descarteslabs.md); these tests skip when it is not.
Its module-level state (settings, default auth) is process-wide, so this module has its own
simulator and sets the SDK's environment once.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from taskwarden.config.providers import DescartesLabsSettings
from taskwarden.lifecycle import Remote
from taskwarden.providers.base import Target
from taskwarden.providers.descarteslabs import adapter as dl
from taskwarden.simulator.descarteslabs import DescartesLabsConfig, DescartesLabsSimulator
from taskwarden.simulator.descarteslabs_accounts import LEGACY_CLIENT_ID
from taskwarden.simulator.server import SimulatorServer

# the SDK warns about Python 3.11 and about its own deprecations; neither is ours to fix
pytestmark = pytest.mark.filterwarnings("ignore")


@dataclass
class Sdk:
    """The SDK's classes, and a vector client authenticated through the simulator."""

    auth: Any
    vector: Any
    AsyncJob: Any
    CopyJob: Any
    DeleteJob: Any
    ExportTask: Any
    FailedJobError: type[Exception]
    WaitTimeoutError: type[Exception]


@pytest.fixture(scope="module")
def sdk_modules(_module_sim: SimulatorServer) -> Iterator[dict[str, Any]]:
    """The SDK imported with its settings pointing at this module's simulator."""
    try:
        installed = version("descarteslabs")
    except PackageNotFoundError:
        pytest.skip("the descarteslabs SDK is not installed (pip install --no-deps ...)")
    if not installed.startswith("1."):
        pytest.skip(f"descarteslabs {installed} has no vectors module; 1.12.1 is needed")
    base = f"{_module_sim.url}/descarteslabs"
    with pytest.MonkeyPatch.context() as env, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.setenv("DESCARTESLABS_ENV", "gcp-production")
        # read when the SDK's settings are first built: ExportTask.log makes its own Storage()
        env.setenv("DESCARTESLABS_STORAGE_URL", f"{base}/storage/v1")
        env.setenv("DESCARTESLABS_VECTOR_URL", f"{base}/vector/v2")
        # import order matters: the vectors package must be mapped before the client modules
        async_job = importlib.import_module("descarteslabs.vectors.async_job")
        featurecollection = importlib.import_module("descarteslabs.vectors.featurecollection")
        exceptions = importlib.import_module("descarteslabs.vectors.exceptions")
        auth = importlib.import_module("descarteslabs.auth")
        vector = importlib.import_module("descarteslabs.client.services.vector")
        storage = importlib.import_module("descarteslabs.client.services.storage")
        yield {
            "base": base,
            "Auth": auth.Auth,
            "Vector": vector.Vector,
            "Storage": storage.Storage,
            "AsyncJob": async_job.AsyncJob,
            "CopyJob": async_job.CopyJob,
            "DeleteJob": async_job.DeleteJob,
            "ExportTask": featurecollection.ExportTask,
            "FailedJobError": exceptions.FailedJobError,
            "WaitTimeoutError": exceptions.WaitTimeoutError,
        }


@pytest.fixture
def lab(server: SimulatorServer) -> DescartesLabsSimulator:
    server.descarteslabs.configure(DescartesLabsConfig().model_dump())
    return server.descarteslabs


@pytest.fixture
def sdk(sdk_modules: dict[str, Any], lab: DescartesLabsSimulator, tmp_path: Path) -> Iterator[Sdk]:
    """A client logged in with the simulator's client id and refresh token, polling fast."""
    m = sdk_modules
    auth = m["Auth"](
        domain=f"{m['base']}/accounts",
        client_id="sim-client",
        refresh_token="sim-refresh-token",
        token_info_path=str(tmp_path / "token_info.json"),  # not the user's ~/.descarteslabs
    )
    m["Auth"].set_default_auth(auth)
    m["Storage"].set_default_client(m["Storage"](url=f"{m['base']}/storage/v1", auth=auth))
    vector = m["Vector"](url=f"{m['base']}/vector/v2", auth=auth)
    polling = m["AsyncJob"].COMPLETION_POLL_INTERVAL_SECONDS
    m["AsyncJob"].COMPLETION_POLL_INTERVAL_SECONDS = 0.05  # the SDK's own knob (5 s)
    yield Sdk(
        auth,
        vector,
        m["AsyncJob"],
        m["CopyJob"],
        m["DeleteJob"],
        m["ExportTask"],
        m["FailedJobError"],
        m["WaitTimeoutError"],
    )
    m["AsyncJob"].COMPLETION_POLL_INTERVAL_SECONDS = polling


def test_the_sdk_waits_for_a_copy_job_to_finish(
    server: SimulatorServer, lab: DescartesLabsSimulator, sdk: Sdk
) -> None:
    """CopyJob.wait_for_completion() sees PENDING, then polls to DONE."""
    job = lab.add_copy_job(pending_seconds=0.3, running_seconds=0.5)
    copy = sdk.CopyJob(job.product_id, vector_client=sdk.vector)
    assert copy.state == "PENDING"
    copy.wait_for_completion(timeout=20)
    assert (copy.state, copy.errors) == ("DONE", [])
    assert copy.ended is not None
    polls = server.stats.count(route="vector/v2/products/{product_id}/search/copy/status")
    assert polls >= 3  # it saw the job pending and running before it ended


def test_the_sdk_fails_a_done_job_with_errors(lab: DescartesLabsSimulator, sdk: Sdk) -> None:
    """DONE with errors is a FailedJobError for the SDK too: the quirk is the platform's."""
    job = lab.add_delete_job(running_seconds=0.3, errors=["feature 7: bad geometry"])
    with pytest.raises(sdk.FailedJobError, match="delete features from product"):
        sdk.DeleteJob(job.product_id, vector_client=sdk.vector).wait_for_completion(timeout=20)


def test_the_sdk_never_recognises_the_documented_failed(
    lab: DescartesLabsSimulator, sdk: Sdk
) -> None:
    """A job FAILED without errors makes the SDK wait until its timeout (taskwarden ends it)."""
    job = lab.add_copy_job(outcome="failure")
    with pytest.raises(sdk.WaitTimeoutError):
        sdk.CopyJob(job.product_id, vector_client=sdk.vector).wait_for_completion(timeout=0.5)
    failure = lab.add_copy_job(outcome="failure", failure_word="FAILURE")
    with pytest.raises(sdk.FailedJobError):
        sdk.CopyJob(failure.product_id, vector_client=sdk.vector).wait_for_completion(timeout=5)


def test_the_sdk_exports_waits_downloads_and_reads_the_log(
    lab: DescartesLabsSimulator, sdk: Sdk, tmp_path: Path
) -> None:
    """export → ExportTask.get_result(wait=True) through 404s → get_file and log."""
    lab.configure({"api_pending_seconds": 0.2, "api_running_seconds": 0.5})
    lab.add_product("sim:buildings")
    export_id = sdk.vector.export_product_from_query("sim:buildings", "exports/b.geojson")
    task = sdk.ExportTask("sim:buildings", export_id, client=sdk.vector)
    task.COMPLETION_POLL_INTERVAL_SECONDS = 0.05
    assert task.ready is False  # the 404 of an unfinished export
    task.get_result(wait=True, timeout=20)
    assert (task.status, task.is_success, task.key) == ("SUCCESS", True, "exports/b.geojson")
    saved = tmp_path / "b.geojson"
    task.get_file(str(saved))
    export = lab.exports[export_id]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == export.sha256
    assert task.log == export.log
    listed = list(sdk.vector.get_export_results("sim:buildings"))
    assert [item.id for item in listed] == [export_id]


def test_the_sdk_reads_a_failed_export(lab: DescartesLabsSimulator, sdk: Sdk) -> None:
    """The failure fields reach the SDK's properties unchanged."""
    export = lab.add_export(
        outcome="failure",
        exception_name="MemoryError",
        failure_type="executable_failure",
        runtime=9,
        peak_memory_usage=2**31,
    )
    task = sdk.ExportTask(export.product_id, export.export_id, client=sdk.vector)
    task.get_result(wait=True, timeout=5)
    assert (task.status, task.is_success) == ("FAILURE", False)
    assert (task.exception_name, task.failure_type) == ("MemoryError", "executable_failure")
    assert (task.runtime, task.peak_memory_usage) == (9, 2**31)


def test_the_sdk_refreshes_our_short_lived_jwts_before_they_expire(
    lab: DescartesLabsSimulator, sdk: Sdk
) -> None:
    """With 2 s tokens the SDK renews from exp (leeway 1 s) and never meets a 401."""
    lab.configure({"token_ttl": 2})
    sdk.auth.leeway = 1
    job = lab.add_copy_job(running_seconds=3.5)
    sdk.CopyJob(job.product_id, vector_client=sdk.vector).wait_for_completion(timeout=20)
    assert lab.counters["issued"] >= 3
    assert lab.counters.get("unauthorized", 0) == 0


def test_the_sdk_creates_a_product_from_a_query_and_waits_for_the_copy(
    lab: DescartesLabsSimulator, sdk: Sdk
) -> None:
    """create_product_from_query answers the namespaced new product whose CopyJob finishes."""
    lab.configure({"api_pending_seconds": 0.1, "api_running_seconds": 0.3})
    lab.add_product("sim:roads")
    created = sdk.vector.create_product_from_query(
        "roads-copy", "Roads", "a copy", "sim:roads", query_limit=10
    )
    assert created.data.id.endswith(":roads-copy")
    copy = sdk.CopyJob(created.data.id, vector_client=sdk.vector)
    copy.wait_for_completion(timeout=20)
    assert copy.state == "DONE"


# --- what issue #10 found: the grant, the host, errors while running, a failure's leavings ------


def adapter(base: str, **fields: Any) -> dl.DescartesLabsProvider:
    """An adapter on its own client, pointed at this module's simulator (close with aclose)."""
    settings = DescartesLabsSettings(
        vector_url=f"{base}/vector/v2",
        storage_url=f"{base}/storage/v1",
        accounts_url=f"{base}/accounts",
        **fields,
    )
    return dl.DescartesLabsProvider(settings, httpx.AsyncClient(timeout=10))


def run_adapter(
    base: str,
    action: Callable[[dl.DescartesLabsProvider], Any],
    **fields: Any,
) -> Any:
    async def main() -> Any:
        provider = adapter(base, **fields)
        try:
            return await action(provider)
        finally:
            await provider._client.aclose()

    return asyncio.run(main())


def test_the_sdks_legacy_client_grant_is_the_adapters_field_for_field(
    sdk_modules: dict[str, Any], lab: DescartesLabsSimulator, tmp_path: Path
) -> None:
    """The SDK's Auth with the legacy client id buys a JWT with the jwt-bearer delegation
    (scope, target, api_type), and the adapter's token request is the same body."""
    m = sdk_modules
    auth = m["Auth"](
        domain=f"{m['base']}/accounts",
        client_id=LEGACY_CLIENT_ID,
        refresh_token="sim-legacy-refresh-token",
        token_info_path=str(tmp_path / "legacy.json"),
    )
    assert auth.token.count(".") == 2
    credentials = {
        "client_id": LEGACY_CLIENT_ID,
        "refresh_token": SecretStr("sim-legacy-refresh-token"),
    }
    token = run_adapter(m["base"], lambda p: p.auth.current(), **credentials)
    assert token is not None
    sdk_body, ours = lab.accounts.requests
    assert sdk_body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert list(ours.items()) == list(sdk_body.items())  # same fields, values and order


def test_the_sdks_refresh_token_grant_is_the_adapters_field_for_field(
    sdk_modules: dict[str, Any], lab: DescartesLabsSimulator, tmp_path: Path
) -> None:
    """Any other client id: grant_type refresh_token, scope only when given, on both sides."""
    m = sdk_modules
    for scope in (None, ["openid", "groups"]):
        lab.accounts.requests = []
        auth = m["Auth"](
            domain=f"{m['base']}/accounts",
            client_id="sim-client",
            refresh_token="sim-refresh-token",
            scope=scope,
            token_info_path=str(tmp_path / "plain.json"),
        )
        auth._token = None  # the file written by the previous round holds one
        assert auth.token
        credentials = {"client_id": "sim-client", "refresh_token": SecretStr("sim-refresh-token")}
        run_adapter(m["base"], lambda p: p.auth.current(), scope=scope, **credentials)
        sdk_body, ours = lab.accounts.requests
        assert list(ours.items()) == list(sdk_body.items())


def test_the_adapters_default_iam_host_is_the_sdks(sdk_modules: dict[str, Any]) -> None:
    """1.12.1's get_default_domain() (iam_url of gcp-production) is our ACCOUNTS_URL default."""
    auth_module = importlib.import_module("descarteslabs.auth.auth")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DESCARTESLABS_IAM_URL", raising=False)
        assert auth_module.get_default_domain() == DescartesLabsSettings().accounts_url


def test_the_sdk_and_the_adapter_keep_waiting_on_a_running_job_with_errors(
    server: SimulatorServer, lab: DescartesLabsSimulator, sdk: Sdk
) -> None:
    """RUNNING with errors: the SDK's check says not complete and so does the adapter; at DONE
    the SDK raises FailedJobError and the adapter fails the job."""
    job = lab.add_delete_job(
        running_seconds=60, errors=["feature 2: bad"], errors_while_running=True
    )
    watched = sdk.DeleteJob(job.product_id, vector_client=sdk.vector)
    assert (watched.state, watched.errors) == ("RUNNING", ["feature 2: bad"])
    assert watched._check_complete() is False
    target = Target(job.product_id, {"kind": "delete"})
    credentials = {"client_id": "sim-client", "refresh_token": SecretStr("sim-refresh-token")}
    base = f"{server.url}/descarteslabs"
    seen = run_adapter(base, lambda p: p.fetch_status(target), **credentials)
    assert seen.remote is Remote.RUNNING
    server.clock.advance(61)
    with pytest.raises(sdk.FailedJobError):
        watched.wait_for_completion(timeout=5)
    assert run_adapter(base, lambda p: p.fetch_status(target), **credentials).remote is (
        Remote.FAILED
    )


def test_a_failed_exports_diagnostics_are_what_the_sdk_reads(
    server: SimulatorServer, lab: DescartesLabsSimulator, sdk: Sdk
) -> None:
    """ExportTask.log, .stacktrace, .exception_name, .runtime and .peak_memory_usage of a
    failed export are the bytes and facts the adapter's diagnostics and details hold."""
    export = lab.add_export(
        outcome="failure", exception_name="MemoryError", failure_type="executable_failure",
        runtime=12, peak_memory_usage=2**30,
    )  # fmt: skip
    task = sdk.ExportTask(export.product_id, export.export_id, client=sdk.vector)
    task.get_result(wait=True, timeout=5)
    target = Target(export.export_id, {"kind": "export", "product_id": export.product_id})
    credentials = {"client_id": "sim-client", "refresh_token": SecretStr("sim-refresh-token")}
    base = f"{server.url}/descarteslabs"

    async def both(provider: dl.DescartesLabsProvider) -> tuple[Any, Any]:
        return await provider.fetch_status(target), await provider.list_diagnostics(target)

    seen, refs = run_adapter(base, both, **credentials)
    by_name = {ref.name: ref.content for ref in refs}
    assert by_name["export.log"] == task.log
    assert by_name["stacktrace.txt"] == task.stacktrace.encode()
    assert seen.details == {
        "exception_name": task.exception_name,
        "failure_type": task.failure_type,
        "runtime": task.runtime,
        "peak_memory_usage": task.peak_memory_usage,
    }
