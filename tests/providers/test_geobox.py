"""The Geobox adapter against the Geobox simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from taskwarden.config.providers import GeoboxSettings, ProvidersSettings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.net.client import build_client
from taskwarden.providers import geobox
from taskwarden.providers.base import OutputRef, Target
from taskwarden.simulator.server import SimulatorServer

T = TypeVar("T")
TOKEN = "sim-token"  # the simulator's default accepted token
STATUS = "tasks/{uuid}/status/"
DOCUMENT = "tasks/{uuid}/"
DOWNLOAD = "files/{uuid}/download/"
ATTEMPTS = 1 + HttpSettings().retries  # a request and its in-call retries


def call(
    server: SimulatorServer,
    action: Callable[[geobox.GeoboxProvider], Awaitable[T]],
    *,
    token: str | None = TOKEN,
    apikey: str | None = None,
    read_timeout: float = 5.0,
) -> T:
    """Run ``action`` on a provider built as a worker builds it, on a fresh client and loop."""
    settings = Settings(
        providers=ProvidersSettings(
            geobox=GeoboxSettings(
                base_url=server.geobox_url,
                token=SecretStr(token) if token else None,
                apikey=SecretStr(apikey) if apikey else None,
            )
        ),
        http=HttpSettings(read_timeout=read_timeout, connect_timeout=2.0),
    )

    async def main() -> T:
        async with build_client(settings.http) as client:
            return await action(geobox.build(settings, client))

    return asyncio.run(main())


def status(server: SimulatorServer, uuid: str, **options: Any) -> Observation:
    return call(server, lambda p: p.fetch_status(Target(uuid)), **options)


def download(server: SimulatorServer, uuid: str, ref: OutputRef) -> dict[str, Any]:
    async def read(provider: geobox.GeoboxProvider) -> dict[str, Any]:
        async with provider.open_output(Target(uuid), ref) as stream:
            body = b"".join([chunk async for chunk in stream.chunks])
        return {
            "body": body,
            "filename": stream.filename,
            "length": stream.length,
            "type": stream.content_type,
        }

    return call(server, read)


@pytest.mark.parametrize(
    ("script", "remote", "word"),
    [
        ({"pending_seconds": 3600}, Remote.PENDING, "PENDING"),
        ({"running_seconds": 3600}, Remote.RUNNING, "PROGRESS"),
        ({"outcome": "never"}, Remote.RUNNING, "PROGRESS"),
        ({}, Remote.SUCCEEDED, "SUCCESS"),
        ({"outcome": "success_asset"}, Remote.SUCCEEDED, "SUCCESS"),
        ({"outcome": "failure"}, Remote.FAILED, "FAILURE"),
        ({"outcome": "aborted"}, Remote.CANCELLED, "ABORTED"),
    ],
)
def test_status_words_map_onto_the_canonical_lifecycle(
    server: SimulatorServer, script: dict[str, Any], remote: Remote, word: str
) -> None:
    """Each Geobox state word becomes its canonical Remote, with the raw word and name kept."""
    task = server.geobox.add_task(name="ndvi", **script)
    seen = status(server, task.uuid)
    assert (seen.remote, seen.raw_status, seen.name) == (remote, word, "ndvi")


@pytest.mark.parametrize("script", [{"pending_seconds": 3600}, {}, {"outcome": "failure"}])
def test_progress_is_not_asked_for_unless_the_task_runs(
    server: SimulatorServer, script: dict[str, Any]
) -> None:
    """A status check outside PROGRESS costs exactly one request: no status/ call."""
    task = server.geobox.add_task(**script)
    seen = status(server, task.uuid)
    assert seen.progress is None
    assert server.stats.count(route=DOCUMENT, task=task.uuid) == 1
    assert server.stats.count(route=STATUS, task=task.uuid) == 0


def test_progress_of_a_running_task_is_current_over_total(server: SimulatorServer) -> None:
    """While PROGRESS, a second request reads {current, total} into a fraction."""
    task = server.geobox.add_task(running_seconds=1000, progress_total=200)
    server.clock.advance(250)
    seen = status(server, task.uuid)
    assert seen.remote is Remote.RUNNING
    assert seen.progress == pytest.approx(0.25, abs=0.01)
    assert server.stats.count(route=STATUS, task=task.uuid) == 1


def test_a_failing_progress_call_does_not_lose_the_observation(server: SimulatorServer) -> None:
    """A 503 on status/ still yields the running observation, without progress."""
    task = server.geobox.add_task(running_seconds=1000)
    server.inject(kind="status", status=503, route=STATUS, task=task.uuid, count=None)
    seen = status(server, task.uuid)
    assert (seen.remote, seen.progress) == (Remote.RUNNING, None)


def test_failure_message_names_the_error_type_and_message(server: SimulatorServer) -> None:
    """A FAILURE task's result.detail becomes 'type: msg' on the observation."""
    task = server.geobox.add_task(
        outcome="failure", failure_msg="CRS EPSG:99999 is unknown", failure_type="geobox.CRSError"
    )
    seen = status(server, task.uuid)
    assert seen.remote is Remote.FAILED
    assert seen.message == "geobox.CRSError: CRS EPSG:99999 is unknown"


def test_failure_message_from_result_errors(server: SimulatorServer) -> None:
    """A FAILURE task that reports result.errors has them joined into the message."""
    errors = [{"msg": "band 4 missing"}, "no data in extent"]
    task = server.geobox.add_task(outcome="failure", failure_errors=errors)
    assert status(server, task.uuid).message == "band 4 missing; no data in extent"


def test_an_unknown_status_word_is_recorded_raw(server: SimulatorServer) -> None:
    """A word outside the five Geobox states maps to UNKNOWN and keeps the word."""
    task = server.geobox.add_task(running_seconds=1000)
    server.inject(kind="unknown_status", task=task.uuid, word="REVOKED")
    seen = status(server, task.uuid)
    assert (seen.remote, seen.raw_status, seen.progress) == (Remote.UNKNOWN, "REVOKED", None)


def test_file_output_is_listed_and_streamed_byte_for_byte(server: SimulatorServer) -> None:
    """A file result lists task.json, the file info and the file, whose bytes match the sha256."""
    task = server.geobox.add_task(
        file_name="dem.tif", file_size=3 * 1024 * 1024 + 17, content_type="image/tiff"
    )
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    assert [r.name for r in refs] == ["task.json", "file_info.json", "dem.tif"]
    task_json, info, file_ref = refs
    assert task_json.content is not None and json.loads(task_json.content)["uuid"] == task.uuid
    assert info.content is not None and json.loads(info.content)["size"] == task.script.file_size
    assert file_ref.content is None
    assert file_ref.source == f"geobox:files/{task.output_uuid}/download/"

    got = download(server, task.uuid, file_ref)
    assert hashlib.sha256(got["body"]).hexdigest() == task.sha256
    assert (got["filename"], got["length"], got["type"]) == (
        "dem.tif",
        task.script.file_size,
        "image/tiff",
    )
    assert server.stats.count(route=DOWNLOAD, task=task.uuid) == 1


def test_inline_outputs_open_from_memory(server: SimulatorServer) -> None:
    """Opening an inline ref streams its content without asking the platform."""
    task = server.geobox.add_task()
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    before = server.stats.count()
    got = download(server, task.uuid, refs[0])
    assert got["body"] == refs[0].content
    assert server.stats.count() == before


@pytest.mark.parametrize(
    ("kind", "path", "archived"),
    [
        ("layer", "vectorLayers", "layer.json"),
        ("raster", "rasters", "raster.json"),
        ("model", "3dmodels", "model.json"),
        ("3dtiles", "3dtiles", "3dtiles.json"),
        ("table", "tables", "table.json"),
    ],
)
def test_asset_outputs_are_archived_as_their_description(
    server: SimulatorServer, kind: str, path: str, archived: str
) -> None:
    """A published asset is described by the SDK's endpoint for its kind, inline (rasters and
    models then have their bytes too: tests/providers/test_geobox_assets.py)."""
    task = server.geobox.add_task(outcome="success_asset", asset_kind=kind)
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    assert [r.name for r in refs][:2] == ["task.json", archived]
    assert len(refs) == (3 if kind in ("raster", "model") else 2)
    assert refs[1].source == f"geobox:{path}/{task.output_uuid}/"
    assert refs[1].content is not None
    assert json.loads(refs[1].content)["uuid"] == task.output_uuid


def test_the_listed_file_name_comes_from_the_file_info(
    server: SimulatorServer,
) -> None:
    """The listed name comes from the file info, so it holds even before the download."""
    task = server.geobox.add_task(file_name="report.csv", file_size=10)
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    assert refs[-1].name == "report.csv"


def test_abort_stops_the_remote_task(server: SimulatorServer) -> None:
    """abort() posts tasks/{uuid}/abort/ and the task then reads as CANCELLED."""
    task = server.geobox.add_task(outcome="never")
    call(server, lambda p: p.abort(Target(task.uuid)))
    assert server.geobox.state(task.uuid) == "ABORTED"
    assert status(server, task.uuid).remote is Remote.CANCELLED


def test_missing_task_is_remote_not_found(server: SimulatorServer) -> None:
    """A 404 on the task document is a permanent RemoteNotFound naming the task."""
    with pytest.raises(RemoteNotFound, match="no-such-task") as caught:
        status(server, "no-such-task")
    assert caught.value.status_code == 404
    with pytest.raises(RemoteNotFound):
        call(server, lambda p: p.abort(Target("no-such-task")))


def test_rejected_token_is_credentials_rejected(server: SimulatorServer) -> None:
    """A 401 is CredentialsRejected, with the platform's detail and without the token."""
    task = server.geobox.add_task()
    with pytest.raises(CredentialsRejected, match="Could not validate credentials") as caught:
        status(server, task.uuid, token="wrong-secret-token")
    assert "wrong-secret-token" not in str(caught.value)


def test_api_key_travels_as_a_query_parameter_and_stays_out_of_messages(
    server: SimulatorServer,
) -> None:
    """With only an API key the adapter authenticates by ?apikey=, and errors never show it."""
    task = server.geobox.add_task()
    assert status(server, task.uuid, token=None, apikey="sim-apikey").remote is Remote.SUCCEEDED
    with pytest.raises(RemoteNotFound) as caught:
        status(server, "gone", token=None, apikey="sim-apikey")
    assert "sim-apikey" not in str(caught.value)


def test_a_5xx_burst_is_provider_unavailable_then_clears(server: SimulatorServer) -> None:
    """Each 503 of a burst is a retryable ProviderUnavailable; the check after it succeeds."""
    task = server.geobox.add_task()
    server.inject(kind="status", status=503, task=task.uuid, count=2, retry_after="4")
    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as caught:
            status(server, task.uuid)
        assert (caught.value.status_code, caught.value.retry_after) == (503, 4.0)
    assert status(server, task.uuid).remote is Remote.SUCCEEDED


def test_a_proxy_error_page_is_quoted_in_the_message(server: SimulatorServer) -> None:
    """An HTML 502 from a proxy is ProviderUnavailable with the page's text in the message."""
    task = server.geobox.add_task()
    page = "<h1>502 Bad Gateway</h1>"
    server.inject(kind="status", status=502, task=task.uuid, body=page, count=ATTEMPTS)
    with pytest.raises(ProviderUnavailable, match="502 Bad Gateway"):
        status(server, task.uuid)


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), (None, None)])
def test_429_is_rate_limited_with_retry_after(
    server: SimulatorServer, header: str | None, expected: float | None
) -> None:
    """A 429 is RateLimited whose retry_after is the Retry-After header, or None without one."""
    task = server.geobox.add_task()
    server.inject(kind="rate_limit", task=task.uuid, retry_after=header)
    with pytest.raises(RateLimited) as caught:
        status(server, task.uuid)
    assert caught.value.retry_after == expected


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "truncate", "keep_bytes": 20, "count": ATTEMPTS},
        {"kind": "malformed_json"},  # not retried in the call: the adapter parses it
        {"kind": "reset", "count": ATTEMPTS},
    ],
)
def test_broken_responses_are_retryable(server: SimulatorServer, fault: dict[str, Any]) -> None:
    """A cut-off body, garbled JSON or a reset connection (on every in-call attempt) is
    ProviderUnavailable, not a crash."""
    task = server.geobox.add_task()
    server.inject(task=task.uuid, route=DOCUMENT, **fault)
    with pytest.raises(ProviderUnavailable):
        status(server, task.uuid)
    assert status(server, task.uuid).remote is Remote.SUCCEEDED


def test_a_slow_platform_times_out_as_unavailable(server: SimulatorServer) -> None:
    """A response slower than the read timeout is ProviderUnavailable (the SDK waits forever)."""
    task = server.geobox.add_task()
    server.inject(kind="delay", delay=1.0, task=task.uuid)
    with pytest.raises(ProviderUnavailable, match="Timeout"):
        status(server, task.uuid, read_timeout=0.2)


def test_a_truncated_download_fails_while_streaming(server: SimulatorServer) -> None:
    """A download that stops short of its Content-Length raises ProviderUnavailable mid-stream."""
    task = server.geobox.add_task(file_size=2 * 1024 * 1024)
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    server.inject(kind="truncate", keep_bytes=100_000, task=task.uuid, route=DOWNLOAD)
    with pytest.raises(ProviderUnavailable):
        download(server, task.uuid, refs[-1])


def test_a_download_error_status_is_translated_on_open(server: SimulatorServer) -> None:
    """A 503 on the download is raised when the output is opened, before any chunk."""
    task = server.geobox.add_task(file_size=10)
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    server.inject(kind="status", status=503, task=task.uuid, route=DOWNLOAD, count=ATTEMPTS)
    with pytest.raises(ProviderUnavailable) as caught:
        download(server, task.uuid, refs[-1])
    assert caught.value.status_code == 503
