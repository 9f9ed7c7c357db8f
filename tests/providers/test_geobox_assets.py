"""The Geobox adapter against the simulator on what issue #10 found missing: raster and 3D-model
bytes through their download endpoints, a password login that renews, the platform's times and
facts on each observation, and what a failed task leaves behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr, ValidationError

from taskwarden.config.providers import GeoboxSettings, ProvidersSettings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import CredentialsRejected
from taskwarden.lifecycle import Remote
from taskwarden.net.client import build_client
from taskwarden.providers import geobox
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.geobox.auth import Credentials
from taskwarden.providers.timestamps import epoch_seconds
from taskwarden.simulator.server import SimulatorServer

T = TypeVar("T")
LOGIN = "auth/token/"
DOCUMENT = "tasks/{uuid}/"
PASSWORD = {"username": "sim-user", "password": SecretStr("sim-password")}


def call(
    server: SimulatorServer,
    action: Callable[[geobox.GeoboxProvider], Awaitable[T]],
    clock: Callable[[], float] | None = None,
    **credentials: Any,
) -> T:
    """Run ``action`` on a provider with these credentials (default: the fixed token)."""
    fields = credentials or {"token": SecretStr("sim-token")}
    settings = Settings(
        providers=ProvidersSettings(geobox=GeoboxSettings(base_url=server.geobox_url, **fields)),
        http=HttpSettings(read_timeout=5.0, connect_timeout=2.0),
    )

    async def main() -> T:
        async with build_client(settings.http) as client:
            provider = geobox.build(settings, client)
            if clock is not None:
                provider.auth = Credentials(client, settings.providers.geobox, clock=clock)
            return await action(provider)

    return asyncio.run(main())


async def archive(provider: geobox.GeoboxProvider, uuid: str) -> dict[str, dict[str, Any]]:
    """Every output as the archive would take it: name (the platform's, if it names one),
    bytes, announced length."""
    got: dict[str, dict[str, Any]] = {}
    for ref in await provider.list_outputs(Target(uuid)):
        got.update(await read(provider, uuid, ref))
    return got


async def read(provider: geobox.GeoboxProvider, uuid: str, ref: OutputRef) -> dict[str, Any]:
    async with provider.open_output(Target(uuid), ref) as stream:
        body = b"".join([chunk async for chunk in stream.chunks])
    return {stream.filename or ref.name: {"body": body, "length": stream.length, "ref": ref}}


# --- raster and model bytes -----------------------------------------------------------------


def test_a_raster_is_archived_with_its_bytes_named_by_the_platform(
    server: SimulatorServer,
) -> None:
    """raster.json, then rasters/{u}/download/ streamed, named by its Content-Disposition."""
    task = server.geobox.add_task(
        outcome="success_asset", asset_kind="raster", file_name="dem.tif", file_size=70_000
    )
    got = call(server, lambda p: archive(p, task.uuid))
    assert list(got) == ["task.json", "raster.json", "dem.tif"]
    raster = got["dem.tif"]
    assert hashlib.sha256(raster["body"]).hexdigest() == task.sha256
    assert raster["length"] == 70_000
    assert raster["ref"].source == f"geobox:rasters/{task.output_uuid}/download/"
    assert json.loads(got["raster.json"]["body"])["size"] == 70_000
    assert server.stats.count(route="rasters/{uuid}/download/", task=task.uuid) == 1


def test_a_model_is_archived_as_its_name_glb_from_its_content(server: SimulatorServer) -> None:
    """3dmodels/{u}/content/ streamed as '<model name>.glb', as the SDK names it."""
    task = server.geobox.add_task(
        name="city", outcome="success_asset", asset_kind="model", file_size=5000
    )
    got = call(server, lambda p: archive(p, task.uuid))
    assert list(got) == ["task.json", "model.json", "city model.glb"]
    assert hashlib.sha256(got["city model.glb"]["body"]).hexdigest() == task.sha256
    assert server.stats.count(route="3dmodels/{uuid}/content/", task=task.uuid) == 1


def test_a_model_naming_an_obj_model_downloads_that_ones_content(
    server: SimulatorServer,
) -> None:
    """Model.download's indirection: the obj model's description and content, not the own."""
    task = server.geobox.add_task(
        name="bridge", outcome="success_asset", asset_kind="model", model_obj=True
    )
    got = call(server, lambda p: archive(p, task.uuid))
    assert list(got) == ["task.json", "model.json", "bridge model obj.glb"]
    assert json.loads(got["model.json"]["body"])["obj"] == task.obj_uuid
    assert got["bridge model obj.glb"]["ref"].source == f"geobox:3dmodels/{task.obj_uuid}/content/"
    assert hashlib.sha256(got["bridge model obj.glb"]["body"]).hexdigest() == task.sha256


@pytest.mark.parametrize("kind", ["raster", "model"])
def test_asset_bytes_download_with_an_api_key_too(server: SimulatorServer, kind: str) -> None:
    """With only an API key, ?apikey= goes on the download as on every call."""
    task = server.geobox.add_task(outcome="success_asset", asset_kind=kind, file_size=100)
    got = call(server, lambda p: archive(p, task.uuid), apikey=SecretStr("sim-apikey"))
    assert any(hashlib.sha256(item["body"]).hexdigest() == task.sha256 for item in got.values())


# --- password login ---------------------------------------------------------------------------


def test_a_password_login_serves_every_request_of_the_process(server: SimulatorServer) -> None:
    """One form POST to auth/token/ (username, password), then bearer requests only."""
    tasks = [server.geobox.add_task() for _ in range(5)]

    async def many(provider: geobox.GeoboxProvider) -> list[Remote]:
        seen = await asyncio.gather(*(provider.fetch_status(Target(t.uuid)) for t in tasks))
        return [o.remote for o in seen]

    assert call(server, many, **PASSWORD) == [Remote.SUCCEEDED] * 5
    assert server.stats.count(route=LOGIN) == 1
    assert server.geobox.logins == [
        {
            "content_type": "application/x-www-form-urlencoded",
            "form": {"username": "sim-user", "password": "sim-password"},
        }
    ]


def test_a_login_is_renewed_before_the_expiry_it_announces(server: SimulatorServer) -> None:
    """With expires_in 60 the adapter logs in again 15 s early (a quarter of 60): no 401."""
    server.geobox.configure({"token_ttl": 60})
    task = server.geobox.add_task(outcome="never")

    async def across(provider: geobox.GeoboxProvider) -> None:
        for _ in range(4):
            await provider.fetch_status(Target(task.uuid))
            server.clock.advance(25)

    call(server, across, clock=lambda: server.clock.now(), **PASSWORD)
    assert server.stats.count(route=LOGIN) == 2  # at 0 s, then at 50 s (due at 45; good to 95)
    assert server.stats.count(route=DOCUMENT) == 4  # one per check: no 401 to retry


def test_a_token_dropped_by_the_platform_costs_one_login_and_one_retry(
    server: SimulatorServer,
) -> None:
    """No expiry announced: the 401 of an expired token buys one login and the call succeeds."""
    server.geobox.configure({"token_ttl": 10, "announce_expiry": False})
    task = server.geobox.add_task(outcome="never")

    async def expired(provider: geobox.GeoboxProvider) -> Remote:
        await provider.fetch_status(Target(task.uuid))
        server.clock.advance(11)
        return (await provider.fetch_status(Target(task.uuid))).remote

    assert call(server, expired, **PASSWORD) is Remote.RUNNING
    assert server.stats.count(route=LOGIN) == 2
    assert server.stats.count(route=DOCUMENT) == 3  # the second check's 401, then its retry


def test_a_refused_login_names_the_settings_and_never_the_password(
    server: SimulatorServer,
) -> None:
    """A wrong password is CredentialsRejected, saying which settings to check."""
    task = server.geobox.add_task()
    with pytest.raises(CredentialsRejected, match="GEOBOX__USERNAME and PASSWORD") as refused:
        call(
            server,
            lambda p: p.fetch_status(Target(task.uuid)),
            username="sim-user",
            password=SecretStr("hunter2-wrong"),
        )
    assert "hunter2-wrong" not in str(refused.value)
    assert "Incorrect username or password" in str(refused.value)


def test_a_token_or_api_key_wins_over_a_password_as_in_the_sdk(server: SimulatorServer) -> None:
    """The SDK's precedence: an API key set beside a password is used; no login is sent."""
    task = server.geobox.add_task()
    call(
        server,
        lambda p: p.fetch_status(Target(task.uuid)),
        apikey=SecretStr("sim-apikey"),
        **PASSWORD,
    )
    assert server.stats.count(route=LOGIN) == 0


def test_a_username_without_a_password_is_refused_at_start() -> None:
    """USERNAME and PASSWORD go together."""
    with pytest.raises(ValidationError, match="GEOBOX__USERNAME and TASKWARDEN"):
        GeoboxSettings(username="someone")


# --- times, facts, diagnostics ----------------------------------------------------------------


def test_an_observation_carries_the_tasks_times_and_result_facts(
    server: SimulatorServer,
) -> None:
    """accepted_at, started_at, finished_at become the remote times; result's uuid a detail."""
    task = server.geobox.add_task(pending_seconds=1, running_seconds=2, outcome="success_asset")
    server.clock.advance(4)
    seen = call(server, lambda p: p.fetch_status(Target(task.uuid)))
    doc = server.geobox.task(task.uuid).document(server.clock.now())
    assert seen.remote_created_at == epoch_seconds(doc["accepted_at"])
    assert seen.remote_started_at == epoch_seconds(doc["started_at"])
    assert seen.remote_ended_at == epoch_seconds(doc["finished_at"])
    assert seen.remote_ended_at == pytest.approx(task.epoch + 3, abs=0.001)
    assert seen.details == {"layer_uuid": task.output_uuid}


def test_a_failed_task_leaves_its_document_with_the_errors(server: SimulatorServer) -> None:
    """list_diagnostics: task.json holding result.detail; the error type is a detail."""
    task = server.geobox.add_task(
        outcome="failure", failure_msg="band 5 missing", failure_type="geobox.BandError"
    )
    seen = call(server, lambda p: p.fetch_status(Target(task.uuid)))
    assert seen.details == {"error_type": "geobox.BandError"}
    refs = call(server, lambda p: p.list_diagnostics(Target(task.uuid)))
    assert [r.name for r in refs] == ["task.json"]
    document = json.loads(refs[0].content or b"")
    assert (document["state"], document["result"]["detail"]["msg"]) == ("FAILURE", "band 5 missing")
