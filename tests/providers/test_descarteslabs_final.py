"""The Descartes Labs adapter on what a job leaves behind and on its edges, against the simulator:
errors judged only at a final state, the platform's timestamps and facts on each observation,
the diagnostics of a failed job or export, the grace of an export that never appears, and the
token grant the SDK uses for each client id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from taskwarden.config.providers import DescartesLabsSettings
from taskwarden.errors import RemoteNotFound, RequestRejected
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import Target
from taskwarden.providers.descarteslabs import adapter as dl
from taskwarden.providers.descarteslabs.auth import LEGACY_CLIENT_IDS, token_request
from taskwarden.providers.timestamps import epoch_seconds
from taskwarden.simulator.descarteslabs import DescartesLabsSimulator
from taskwarden.simulator.descarteslabs_accounts import LEGACY_CLIENT_ID
from taskwarden.simulator.server import SimulatorServer

from .test_descarteslabs import call, export_target, lab, status

__all__ = ["lab"]  # the fixture, shared with the adapter's main test module

EXPORT = "vector/v2/products/{product_id}/search/export/{export_id}"


def test_a_running_job_with_errors_runs_on_until_its_final_state_fails_it(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """RUNNING with errors is still running (details count them); at DONE the errors fail it."""
    job = lab.add_copy_job(running_seconds=60, errors=["feature 3: bad"], errors_while_running=True)
    seen = status(server, job.product_id, kind="copy")
    assert (seen.remote, seen.raw_status, seen.message) == (Remote.RUNNING, "RUNNING", None)
    assert seen.details == {"errors": 1, "first_error": "feature 3: bad"}
    server.clock.advance(61)
    done = status(server, job.product_id, kind="copy")
    assert (done.remote, done.raw_status) == (Remote.FAILED, "DONE")
    assert done.message == "copy job reported 1 error: feature 3: bad"


def test_a_job_observation_carries_the_platforms_created_started_ended(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """created, started and ended of the status document become the remote timestamps."""
    job = lab.add_delete_job(pending_seconds=2, running_seconds=3)
    pending = status(server, job.product_id, kind="delete")
    assert pending.remote_created_at == pytest.approx(job.epoch, abs=0.001)
    assert (pending.remote_started_at, pending.remote_ended_at) == (None, None)
    server.clock.advance(6)
    done = status(server, job.product_id, kind="delete")
    attributes = lab.deletes[job.product_id].document(server.clock.now())["data"]["attributes"]
    assert done.remote_started_at == epoch_seconds(attributes["started"])
    assert done.remote_ended_at == epoch_seconds(attributes["ended"])
    assert (done.remote_started_at, done.remote_ended_at) == (
        pytest.approx(job.epoch + 2, abs=0.001),
        pytest.approx(job.epoch + 5, abs=0.001),
    )


def test_an_export_observation_keeps_its_failure_facts_and_created(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A failed export's exception, failure type, runtime and peak memory are its details."""
    export = lab.add_export(
        outcome="failure", exception_name="MemoryError", failure_type="executable_failure",
        runtime=31.5, peak_memory_usage=5 * 2**30,
    )  # fmt: skip
    seen = call(server, lambda p: p.fetch_status(export_target(export)))
    assert seen.details == {
        "exception_name": "MemoryError",
        "failure_type": "executable_failure",
        "runtime": 31.5,
        "peak_memory_usage": 5 * 2**30,
    }
    assert seen.remote_created_at == pytest.approx(export.epoch, abs=0.001)
    assert len(json.dumps(seen.details)) < 300
    ok = call(server, lambda p: p.fetch_status(export_target(lab.add_export(runtime=2))))
    assert ok.details == {"runtime": 2.0, "peak_memory_usage": 64 * 2**20}  # no "None" names


# --- diagnostics ----------------------------------------------------------------------------


def test_a_failed_export_leaves_its_result_stacktrace_and_log(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """result.json (the failure fields), stacktrace.txt and export.log, as the SDK reads them."""
    export = lab.add_export(outcome="failure", exception_name="KeyError", runtime=4)
    refs = call(server, lambda p: p.list_diagnostics(export_target(export)))
    by_name = {ref.name: ref for ref in refs}
    assert list(by_name) == ["result.json", "stacktrace.txt", "export.log"]
    result = json.loads(by_name["result.json"].content or b"")["data"]["attributes"]
    assert (result["status"], result["exception_name"], result["runtime"]) == (
        "FAILURE",
        "KeyError",
        4.0,
    )
    assert by_name["stacktrace.txt"].content == b"KeyError: simulated"
    assert by_name["export.log"].content == export.log
    assert b"Traceback" in export.log


def test_a_failed_job_leaves_its_status_document_with_the_errors(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A copy that ended with errors leaves status.json, errors and times in it."""
    job = lab.add_copy_job(errors=["feature 1: bad geometry"])
    refs = call(server, lambda p: p.list_diagnostics(Target(job.product_id, {"kind": "copy"})))
    assert [ref.name for ref in refs] == ["status.json"]
    attributes = json.loads(refs[0].content or b"")["data"]["attributes"]
    assert (attributes["state"], attributes["errors"]) == ("DONE", ["feature 1: bad geometry"])
    assert attributes["ended"] is not None


def test_an_export_that_never_finished_leaves_nothing(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A timed-out export is still 404: no diagnostics, and no error either."""
    export = lab.add_export(outcome="never")
    assert call(server, lambda p: p.list_diagnostics(export_target(export))) == []


# --- an export id the platform does not know ------------------------------------------------


def missing_for(
    server: SimulatorServer, target: Target, elapsed: list[float], **settings: Any
) -> list[Observation | Exception]:
    """Check ``target`` once at each of the ``elapsed`` seconds of the adapter's own clock."""
    now = [0.0]

    async def checks(provider: dl.DescartesLabsProvider) -> list[Observation | Exception]:
        provider.clock = lambda: now[0]
        seen: list[Observation | Exception] = []
        for at in elapsed:
            now[0] = at
            try:
                seen.append(await provider.fetch_status(target))
            except RemoteNotFound as exc:
                seen.append(exc)
        return seen

    return call(server, checks, **settings)


def test_an_unknown_export_ends_not_found_after_its_grace(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """404 under a real product is running until not_found_after (the setting), then
    RemoteNotFound quoting the platform's words."""
    lab.add_product("sim:real")
    target = Target("no-such-export", {"kind": "export", "product_id": "sim:real"})
    first, before, after = missing_for(server, target, [0, 599, 600], not_found_after=600)
    assert isinstance(first, Observation) and first.raw_status == dl.NOT_FINISHED
    assert isinstance(before, Observation) and before.remote is Remote.RUNNING
    assert isinstance(after, RemoteNotFound)
    assert "Export not found" in str(after) and "not_found_after 600 s" in str(after)


def test_a_watchs_not_found_after_overrides_the_setting(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """params.not_found_after (a number or its text) wins over the provider setting."""
    lab.add_product("sim:real")
    target = Target("e-2", {"kind": "export", "product_id": "sim:real", "not_found_after": "5"})
    seen = missing_for(server, target, [0, 4, 5])
    assert [type(o).__name__ for o in seen] == ["Observation", "Observation", "RemoteNotFound"]


def test_an_export_that_appears_within_its_grace_is_followed_to_the_end(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A slow export (404 for a while) that finishes inside the grace succeeds."""
    export = lab.add_export(running_seconds=30)
    now = [0.0]

    async def run(provider: dl.DescartesLabsProvider) -> list[Remote]:
        provider.clock = lambda: now[0]
        first = await provider.fetch_status(export_target(export))
        server.clock.advance(31)
        now[0] = 31
        return [first.remote, (await provider.fetch_status(export_target(export))).remote]

    assert call(server, run, not_found_after=60) == [Remote.RUNNING, Remote.SUCCEEDED]


@pytest.mark.parametrize("bad", [0, -1, "soon", True, float("inf")])
def test_a_bad_not_found_after_is_refused(
    lab: DescartesLabsSimulator, server: SimulatorServer, bad: Any
) -> None:
    """not_found_after must be positive seconds, and only on an export."""
    params = {"kind": "export", "product_id": "sim:x", "not_found_after": bad}
    with pytest.raises(RequestRejected, match="not_found_after"):
        dl.parse_target(Target("e", params))
    with pytest.raises(RequestRejected, match="for kind export only"):
        dl.parse_target(Target("p", {"kind": "copy", "not_found_after": 60}))


# --- the grant for the client id ------------------------------------------------------------


def test_the_default_iam_host_is_the_sdks() -> None:
    """1.12.1's iam_url, not 1.0's accounts host; an hour's grace for missing exports."""
    settings = DescartesLabsSettings()
    assert settings.accounts_url == "https://iam.descarteslabs.com"
    assert settings.not_found_after == 3600


def test_the_legacy_client_id_buys_tokens_with_the_jwt_bearer_grant(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """The legacy client id sends scope, target and api_type with the jwt-bearer grant."""
    job = lab.add_copy_job()
    seen = call(
        server,
        lambda p: p.fetch_status(Target(job.product_id, {"kind": "copy"})),
        client_id=LEGACY_CLIENT_ID,
        refresh_token=SecretStr("sim-legacy-refresh-token"),
    )
    assert seen.remote is Remote.SUCCEEDED
    assert lab.accounts.requests == [
        {
            "scope": "openid name groups org email",
            "client_id": LEGACY_CLIENT_ID,
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "target": LEGACY_CLIENT_ID,
            "api_type": "app",
            "refresh_token": "sim-legacy-refresh-token",
        }
    ]
    assert LEGACY_CLIENT_ID in LEGACY_CLIENT_IDS


def test_a_scope_setting_goes_with_the_refresh_token_grant(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """Other client ids send refresh_token, plus scope only when one is set (as the SDK)."""
    job = lab.add_copy_job()
    call(
        server,
        lambda p: p.fetch_status(Target(job.product_id, {"kind": "copy"})),
        scope=["openid", "email"],
    )
    assert lab.accounts.requests == [
        token_request("sim-client", "sim-refresh-token", ["openid", "email"])
    ]
    assert lab.accounts.requests[0]["scope"] == "openid email"
    assert "scope" not in token_request("sim-client", "sim-refresh-token")
