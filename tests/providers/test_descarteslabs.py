"""The Descartes Labs adapter against the Descartes Labs simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from taskwarden.config.providers import DescartesLabsSettings, ProvidersSettings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
    RequestRejected,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.net.client import build_client
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.descarteslabs import adapter as dl
from taskwarden.providers.descarteslabs.auth import TokenSource, jwt_claims, refresh_at
from taskwarden.simulator.clock import SimClock
from taskwarden.simulator.descarteslabs import DescartesLabsConfig, DescartesLabsSimulator
from taskwarden.simulator.descarteslabs_accounts import Accounts
from taskwarden.simulator.server import SimulatorServer

T = TypeVar("T")
COPY = "vector/v2/products/{product_id}/search/copy/status"
DELETE = "vector/v2/products/{product_id}/search/delete/status"
EXPORT = "vector/v2/products/{product_id}/search/export/{export_id}"
PRODUCT = "vector/v2/products/{product_id}"
DATA = "storage/v1/data/get/{key:path}"
TOKEN = "accounts/token"


@pytest.fixture
def lab(server: SimulatorServer) -> DescartesLabsSimulator:
    """The module simulator's Descartes Labs, back to its default config."""
    server.descarteslabs.configure(DescartesLabsConfig().model_dump())
    return server.descarteslabs


def settings_for(server: SimulatorServer, **overrides: Any) -> Settings:
    env = server.descarteslabs.env(server.url)
    fields: dict[str, Any] = {
        "vector_url": env["TASKWARDEN_PROVIDERS__DESCARTESLABS__VECTOR_URL"],
        "storage_url": env["TASKWARDEN_PROVIDERS__DESCARTESLABS__STORAGE_URL"],
        "accounts_url": env["TASKWARDEN_PROVIDERS__DESCARTESLABS__ACCOUNTS_URL"],
        "client_id": "sim-client",
        "refresh_token": SecretStr("sim-refresh-token"),
        **overrides,
    }
    return Settings(
        providers=ProvidersSettings(descarteslabs=DescartesLabsSettings(**fields)),
        # few pools: each builds an SSL context, which is most of a small test's time
        http=HttpSettings(read_timeout=5.0, connect_timeout=2.0, max_connections=4),
    )


def call(
    server: SimulatorServer,
    action: Callable[[dl.DescartesLabsProvider], Awaitable[T]],
    **overrides: Any,
) -> T:
    """Run ``action`` on a provider built as a worker builds it, on a fresh client and loop."""
    settings = settings_for(server, **overrides)

    async def main() -> T:
        async with build_client(settings.http) as client:
            return await action(dl.build(settings, client))

    return asyncio.run(main())


def status(server: SimulatorServer, remote_id: str, **params: Any) -> Observation:
    return call(server, lambda p: p.fetch_status(Target(remote_id, params)))


def export_target(export: Any) -> Target:
    return Target(export.export_id, {"kind": "export", "product_id": export.product_id})


# --- states -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "remote", "word"),
    [
        ({"pending_seconds": 3600}, Remote.PENDING, "PENDING"),
        ({"running_seconds": 3600}, Remote.RUNNING, "RUNNING"),
        ({"outcome": "never"}, Remote.RUNNING, "RUNNING"),
        ({}, Remote.SUCCEEDED, "DONE"),
        ({"success_word": "SUCCESS"}, Remote.SUCCEEDED, "SUCCESS"),
        ({"outcome": "failure"}, Remote.FAILED, "FAILED"),
        ({"outcome": "failure", "failure_word": "FAILURE"}, Remote.FAILED, "FAILURE"),
        ({"errors": ["feature 7: bad geometry"]}, Remote.FAILED, "DONE"),
        ({"success_word": "SUCCESS", "errors": ["x"]}, Remote.FAILED, "SUCCESS"),
        (
            {"outcome": "failure", "failure_word": "FAILURE", "errors": ["x"]},
            Remote.FAILED,
            "FAILURE",
        ),
        # the SDK's AsyncJob._check_complete looks at errors only once the state is final
        (
            {"running_seconds": 3600, "errors": ["x"], "errors_while_running": True},
            Remote.RUNNING,
            "RUNNING",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["copy", "delete"])
def test_job_states_map_onto_the_canonical_lifecycle(
    lab: DescartesLabsSimulator,
    server: SimulatorServer,
    kind: str,
    script: dict[str, Any],
    remote: Remote,
    word: str,
) -> None:
    """Each job state word (both failure spellings) maps; listed errors fail a final state only."""
    job = (lab.add_copy_job if kind == "copy" else lab.add_delete_job)(**script)
    seen = status(server, job.product_id, kind=kind)
    assert (seen.remote, seen.raw_status) == (remote, word)
    assert seen.name is not None and job.product_id in seen.name
    assert server.stats.count(route=COPY if kind == "copy" else DELETE) == 1


def test_job_errors_are_the_failure_message(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A DONE job with errors fails with every error quoted in the message."""
    job = lab.add_delete_job(errors=["feature 7: bad geometry", "feature 9: too large"])
    seen = status(server, job.product_id, kind="delete")
    assert seen.message == (
        "delete job reported 2 errors: feature 7: bad geometry; feature 9: too large"
    )


def test_a_failed_job_without_errors_says_how_it_ended(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """FAILED with an empty errors list still gives a message naming the product and word."""
    job = lab.add_copy_job(outcome="failure")
    message = status(server, job.product_id, kind="copy").message
    assert message == f"copy job for product {job.product_id} ended FAILED, no errors listed"


def test_a_copy_watched_under_another_id_names_its_product(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """params.product_id wins over remote_id, so one product can be watched twice."""
    job = lab.add_delete_job()
    seen = status(server, "second-delete", kind="delete", product_id=job.product_id)
    assert seen.remote is Remote.SUCCEEDED


@pytest.mark.parametrize(
    ("script", "remote", "word"),
    [
        ({"pending_seconds": 3600}, Remote.RUNNING, dl.NOT_FINISHED),
        ({"running_seconds": 3600}, Remote.RUNNING, dl.NOT_FINISHED),
        ({"outcome": "never"}, Remote.RUNNING, dl.NOT_FINISHED),
        ({}, Remote.SUCCEEDED, "SUCCESS"),
        ({"outcome": "failure"}, Remote.FAILED, "FAILURE"),
    ],
)
def test_export_states_map_with_404_as_running(
    lab: DescartesLabsSimulator,
    server: SimulatorServer,
    script: dict[str, Any],
    remote: Remote,
    word: str,
) -> None:
    """An export's 404 result is `running`; its final status maps; nothing else is asked."""
    export = lab.add_export(**script)
    seen = call(server, lambda p: p.fetch_status(export_target(export)))
    assert (seen.remote, seen.raw_status) == (remote, word)
    assert server.stats.count(route=EXPORT, task=export.export_id) == 1


def test_export_failure_message_has_exception_type_runtime_and_memory(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A FAILURE result names exception_name, failure_type, runtime and peak_memory_usage."""
    export = lab.add_export(
        outcome="failure",
        exception_name="MemoryError",
        failure_type="executable_failure",
        runtime=42.5,
        peak_memory_usage=3 * 2**30,
    )
    seen = call(server, lambda p: p.fetch_status(export_target(export)))
    assert seen.message == (
        "export failed: exception MemoryError (failure_type executable_failure: resource limits"
        " reached); runtime 42.5 s; peak_memory_usage 3221225472 bytes (3072.0 MiB)"
    )


def test_a_running_export_checks_its_product_once(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """Repeated 404s cost one product look-up per process, not one per poll."""
    export = lab.add_export(outcome="never")

    async def three(provider: dl.DescartesLabsProvider) -> list[Observation]:
        return [await provider.fetch_status(export_target(export)) for _ in range(3)]

    assert {o.remote for o in call(server, three)} == {Remote.RUNNING}
    assert server.stats.count(route=PRODUCT) == 1
    assert server.stats.count(route=EXPORT) == 3


def test_an_export_of_an_unknown_product_is_not_found(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A 404 on the result and on the product ends in RemoteNotFound naming the product."""
    target = Target("e-1", {"kind": "export", "product_id": "nobody:nothing"})
    with pytest.raises(RemoteNotFound, match="product nobody:nothing not found"):
        call(server, lambda p: p.fetch_status(target))


def test_an_unknown_export_id_of_a_real_product_looks_running(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """The platform's 404 cannot tell an unknown export from a running one (the watch's
    timeout ends it)."""
    lab.add_product("sim:real")
    target = Target("no-such-export", {"kind": "export", "product_id": "sim:real"})
    assert call(server, lambda p: p.fetch_status(target)).raw_status == dl.NOT_FINISHED


def test_a_job_status_404_is_not_found(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """No copy job for the product: RemoteNotFound with the platform's JSON:API detail."""
    with pytest.raises(RemoteNotFound, match="No copy job found"):
        status(server, "sim:nothing", kind="copy")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "params.kind must be one of copy, delete, export"),
        ({"kind": "move"}, "params.kind must be one of"),
        ({"kind": "export"}, "an export needs params.product_id"),
        ({"kind": "copy", "product": "x"}, "unknown params ['product']"),
        ({"kind": "copy", "product_id": "a/b"}, "params.product_id must be a product id"),
        ({"kind": "copy", "product_id": 7}, "params.product_id must be a product id"),
        ({"kind": "delete", "key": "k"}, "params.key is an export's storage key"),
    ],
)
def test_bad_params_are_refused_before_any_request(
    lab: DescartesLabsSimulator, server: SimulatorServer, params: dict[str, Any], reason: str
) -> None:
    """A malformed registration is a permanent RequestRejected that says what is wrong."""
    with pytest.raises(RequestRejected, match=reason.replace("[", r"\[").replace("]", r"\]")):
        status(server, "x", **params)
    assert server.stats.count(platform="descarteslabs") == 0


def test_an_unknown_status_word_is_kept_raw(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A word outside the documented states maps to UNKNOWN and keeps the word."""
    job = lab.add_copy_job(running_seconds=3600)
    server.inject(kind="unknown_status", task=job.product_id, word="QUEUED")
    seen = status(server, job.product_id, kind="copy")
    assert (seen.remote, seen.raw_status) == (Remote.UNKNOWN, "QUEUED")


def test_429_carries_retry_after_and_503_is_retryable(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """429 becomes RateLimited with the header's delay; 5xx ProviderUnavailable."""
    job = lab.add_copy_job()
    server.inject(kind="rate_limit", route=COPY, retry_after="7")
    with pytest.raises(RateLimited) as limited:
        status(server, job.product_id, kind="copy")
    assert limited.value.retry_after == 7.0
    server.inject(kind="status", status=503, route=COPY, count=1 + HttpSettings().retries)
    with pytest.raises(ProviderUnavailable):
        status(server, job.product_id, kind="copy")


# --- auth -------------------------------------------------------------------------------------


def test_one_token_serves_many_requests(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """Twenty concurrent checks with no token yet buy exactly one JWT."""
    jobs = [lab.add_copy_job() for _ in range(20)]

    async def many(provider: dl.DescartesLabsProvider) -> list[Observation]:
        targets = [Target(j.product_id, {"kind": "copy"}) for j in jobs]
        return await asyncio.gather(*(provider.fetch_status(t) for t in targets))

    assert {o.remote for o in call(server, many)} == {Remote.SUCCEEDED}
    assert server.stats.count(route=TOKEN) == 1
    assert lab.counters == {"issued": 1}


def test_a_token_is_refreshed_before_it_expires(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """With a 60 s JWT, the adapter renews it at half-life: no request ever sees a 401."""
    lab.configure({"token_ttl": 60})
    job = lab.add_copy_job()

    settings = settings_for(server)

    async def across_expiry() -> None:
        async with build_client(settings.http) as client:
            provider = dl.build(settings, client)
            # the adapter's clock follows the simulation's, so advancing it is time passing
            provider.auth = TokenSource(
                client,
                settings.providers.descarteslabs,
                clock=lambda: server.clock.epoch(server.clock.now()),
            )
            for _ in range(4):
                await provider.fetch_status(Target(job.product_id, {"kind": "copy"}))
                server.clock.advance(25)

    asyncio.run(across_expiry())
    assert lab.counters.get("unauthorized", 0) == 0
    assert lab.counters["issued"] == 2  # at 0 s, then past 30 s (half of 60); good until 90


def test_a_failed_early_renewal_keeps_the_working_token(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """Accounts down at renewal time: the old token serves until it expires, renewal is retried
    after a back-off, and only an expired token with no renewal is an error."""
    lab.configure({"token_ttl": 60})
    job = lab.add_copy_job()
    settings = settings_for(server)
    target = Target(job.product_id, {"kind": "copy"})

    async def outage() -> None:
        async with build_client(settings.http) as client:
            provider = dl.build(settings, client)
            provider.auth = TokenSource(
                client,
                settings.providers.descarteslabs,
                clock=lambda: server.clock.epoch(server.clock.now()),
            )
            await provider.fetch_status(target)
            server.inject(kind="status", status=503, route=TOKEN, count=None)
            server.clock.advance(35)  # due (half-life 30), still valid (exp 60)
            assert (await provider.fetch_status(target)).remote is Remote.SUCCEEDED
            assert (await provider.fetch_status(target)).remote is Remote.SUCCEEDED
            assert server.stats.count(route=TOKEN) == 2  # the second check waits its back-off
            server.clock.advance(30)  # expired
            with pytest.raises(ProviderUnavailable, match="accounts/token"):
                await provider.fetch_status(target)

    asyncio.run(outage())
    assert lab.counters.get("unauthorized", 0) == 0


def test_a_401_buys_one_new_token_shared_by_concurrent_requests(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """After a revocation, ten concurrent requests each see one 401 and share one refresh."""
    jobs = [lab.add_copy_job() for _ in range(10)]

    async def revoked(provider: dl.DescartesLabsProvider) -> list[Observation]:
        await provider.fetch_status(Target(jobs[0].product_id, {"kind": "copy"}))
        lab.accounts.revoke()
        targets = [Target(j.product_id, {"kind": "copy"}) for j in jobs]
        return await asyncio.gather(*(provider.fetch_status(t) for t in targets))

    assert {o.remote for o in call(server, revoked)} == {Remote.SUCCEEDED}
    assert lab.counters["issued"] == 2
    assert lab.counters["unauthorized"] == 10


def test_a_refused_refresh_token_is_credentials_rejected(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A wrong refresh token is permanent, and the message never quotes it."""
    job = lab.add_copy_job()
    with pytest.raises(CredentialsRejected, match="refresh token refused") as refused:
        call(
            server,
            lambda p: p.fetch_status(Target(job.product_id, {"kind": "copy"})),
            refresh_token=SecretStr("wrong-secret"),
        )
    assert "wrong-secret" not in str(refused.value)
    assert "invalid_grant" in str(refused.value)


def test_an_id_token_answer_is_accepted(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """Older accounts services answer id_token instead of access_token; both work."""
    lab.configure({"token_field": "id_token"})
    job = lab.add_copy_job()
    assert status(server, job.product_id, kind="copy").remote is Remote.SUCCEEDED


def test_a_fixed_token_is_not_refreshed(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """Without a refresh token a 401 is final: no call to the token endpoint."""
    job = lab.add_copy_job()
    stale = lab.accounts.mint()
    lab.accounts.revoke()
    with pytest.raises(CredentialsRejected, match="Token has been revoked"):
        call(
            server,
            lambda p: p.fetch_status(Target(job.product_id, {"kind": "copy"})),
            client_id=None,
            refresh_token=None,
            token=SecretStr(stale),
        )
    assert server.stats.count(route=TOKEN) == 0


@pytest.mark.parametrize(
    ("claims", "leeway", "expected"),
    [
        ({"exp": 1000, "iat": 0}, 300, 700),  # a long-lived token: the full leeway
        ({"exp": 1000, "iat": 900}, 300, 950),  # a short-lived one: half its lifetime
        ({"exp": 1000}, 300, 700),  # no iat: the full leeway
        ({"exp": 1000, "iat": 0}, 0, 1000),
        ({"iat": 0}, 300, None),  # no exp: only a 401 replaces it
        ({"exp": "soon"}, 300, None),
        (None, 300, None),
    ],
)
def test_refresh_time_is_exp_less_a_capped_leeway(
    claims: dict[str, Any] | None, leeway: float, expected: float | None
) -> None:
    """refresh_at is exp minus the leeway, capped at half of exp - iat."""
    assert refresh_at(claims, leeway) == expected


def test_jwt_claims_read_the_payload_and_refuse_garbage() -> None:
    """Claims come from the JWT's middle part; anything else is None."""
    token = Accounts(SimClock()).mint("me", ttl=60)
    claims = jwt_claims(token)
    assert claims is not None and claims["aud"] == "me"
    assert claims["exp"] - claims["iat"] == pytest.approx(60, abs=1)
    assert jwt_claims("not-a-jwt") is None
    assert jwt_claims("a.!!!.c") is None


# --- outputs ----------------------------------------------------------------------------------


def read(server: SimulatorServer, target: Target, ref: OutputRef) -> bytes:
    async def fetch(provider: dl.DescartesLabsProvider) -> bytes:
        async with provider.open_output(target, ref) as stream:
            body = b"".join([chunk async for chunk in stream.chunks])
        assert stream.length in (None, len(body))
        return body

    return call(server, fetch)


def test_a_job_archives_its_final_status_document(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A finished copy lists one inline output: the status document as served."""
    job = lab.add_copy_job()
    target = Target(job.product_id, {"kind": "copy"})
    refs = call(server, lambda p: p.list_outputs(target))
    assert [r.name for r in refs] == ["status.json"]
    document = json.loads(refs[0].content or b"")
    assert document["data"]["type"] == "copy_job"
    assert document["data"]["attributes"]["state"] == "DONE"


def test_an_export_archives_result_geojson_and_log(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """result.json inline, the GeoJSON streamed from storage with its checksum, the log."""
    export = lab.add_export(key="exports/buildings", features=50)
    target = export_target(export)
    refs = call(server, lambda p: p.list_outputs(target))
    by_name = {r.name: r for r in refs}
    assert list(by_name) == ["result.json", "export.geojson", "export.log"]
    assert by_name["export.log"].content == export.log
    body = read(server, target, by_name["export.geojson"])
    assert hashlib.sha256(body).hexdigest() == export.sha256
    assert len(json.loads(body)["features"]) == 50
    assert server.stats.count(route=DATA, task=export.export_id) == 1


def test_an_empty_or_missing_log_is_left_out(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """log_size_bytes 0 means no log to fetch, as in the SDK."""
    export = lab.add_export(log_text="")
    refs = call(server, lambda p: p.list_outputs(export_target(export)))
    assert [r.name for r in refs] == ["result.json", "export.geojson"]


def test_missing_exported_data_is_not_found(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """An export whose storage object is gone fails the download with RemoteNotFound."""
    export = lab.add_export(stored=False)
    target = export_target(export)
    refs = call(server, lambda p: p.list_outputs(target))
    with pytest.raises(RemoteNotFound, match="exported data not found"):
        read(server, target, refs[1])


def test_a_truncated_download_is_an_error(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """Fewer bytes than announced is ProviderUnavailable, not a short file."""
    export = lab.add_export(features=200)
    target = export_target(export)
    refs = call(server, lambda p: p.list_outputs(target))
    server.inject(kind="truncate", route=DATA, keep_bytes=100)
    with pytest.raises(ProviderUnavailable):
        read(server, target, refs[1])


def test_a_401_on_the_download_refreshes_and_retries(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """A token revoked between listing and downloading costs one refresh, not the archive."""
    export = lab.add_export()
    target = export_target(export)

    async def both(provider: dl.DescartesLabsProvider) -> bytes:
        refs = await provider.list_outputs(target)
        lab.accounts.revoke()
        async with provider.open_output(target, refs[1]) as stream:
            return b"".join([chunk async for chunk in stream.chunks])

    assert hashlib.sha256(call(server, both)).hexdigest() == export.sha256
    assert lab.counters["issued"] == 2


def test_abort_is_refused_with_a_reason(
    lab: DescartesLabsSimulator, server: SimulatorServer
) -> None:
    """The platform cannot cancel jobs: abort says so and sends nothing."""
    with pytest.raises(RequestRejected, match="no API to cancel"):
        call(server, lambda p: p.abort(Target("x", {"kind": "copy"})))
    assert server.stats.count(platform="descarteslabs") == 0
