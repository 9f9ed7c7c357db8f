"""The official ``descarteslabs`` SDK (1.x, the last with ``descarteslabs.vectors``) driven against
the simulator: where they disagree, the simulator is wrong.

The SDK pins ``numpy<1.23``, which has no wheel for this project's Python, so it is installed
without its dependencies (see docs/providers/descarteslabs.md); these tests skip when it is not.
Its module-level state (settings, default auth) is process-wide, so this module has its own
simulator and sets the SDK's environment once.
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest

from taskwarden.simulator.descarteslabs import DescartesLabsConfig, DescartesLabsSimulator
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
