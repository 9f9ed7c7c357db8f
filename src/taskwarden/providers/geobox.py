"""The Geobox adapter: status, progress, outputs and abort of a ``geobox.task.Task``.

Paths are those of the official SDK (``geobox`` 2.11 on PyPI), relative to
``settings.providers.geobox.base_url`` (``https://api.geobox.ir/v1/``):

    GET  tasks/{uuid}/              the task document: state, name, result
    GET  tasks/{uuid}/status/       progress {current, total}; asked only while PROGRESS
    POST tasks/{uuid}/abort/        abort
    GET  files/{uuid}/info/?f=json  a file output's metadata (archived as ``file_info.json``)
    GET  files/{uuid}/download/     a file output's bytes, named by Content-Disposition

The SDK's ``Task.output_asset`` describes the other asset kinds with these detail endpoints, all
with ``?f=json`` (``vectorlayer.py``, ``raster.py``, ``model3d.py``, ``tile3d.py``,
``table.py``); each is archived inline as ``<kind>.json``:

    layer_uuid → vectorLayers/{uuid}/    raster_uuid  → rasters/{uuid}/
    model_uuid → 3dmodels/{uuid}/        3dtiles_uuid → 3dtiles/{uuid}/
    table_uuid → tables/{uuid}/

Unlike the SDK's ``wait()``, one status check costs one request except while the task runs, every
request has a timeout (the shared client's), and 429/5xx are errors, not data.

Auth: ``Authorization: Bearer <token>`` when a token is set, else ``?apikey=`` on every URL (the
SDK's precedence); with neither, requests go out unauthenticated (a simulator with auth off).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from taskwarden import net
from taskwarden.config import GeoboxSettings, Settings
from taskwarden.errors import ProviderUnavailable, RemoteNotFound, TaskwardenError
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, OutputStream, Target

NAME = "geobox"

STATES = {
    "PENDING": Remote.PENDING,
    "PROGRESS": Remote.RUNNING,
    "SUCCESS": Remote.SUCCEEDED,
    "FAILURE": Remote.FAILED,
    "ABORTED": Remote.CANCELLED,
}

# result key → (detail path, archive name), in the order the SDK's output_asset checks them
ASSETS: dict[str, tuple[str, str]] = {
    "layer_uuid": ("vectorLayers", "layer.json"),
    "raster_uuid": ("rasters", "raster.json"),
    "model_uuid": ("3dmodels", "model.json"),
    "file_uuid": ("files", "file_info.json"),
    "3dtiles_uuid": ("3dtiles", "3dtiles.json"),
    "table_uuid": ("tables", "table.json"),
}

_FILE_KEY = "file:"  # OutputRef.key prefix of a downloadable file; the rest is its uuid
JSON = "application/json"


def build(settings: Settings, client: httpx.AsyncClient) -> GeoboxProvider:
    """The Geobox adapter for this process, sharing its HTTP client."""
    return GeoboxProvider(settings.providers.geobox, client)


class GeoboxProvider:
    """A :class:`~taskwarden.providers.base.Provider` for Geobox tasks."""

    name = NAME

    def __init__(self, settings: GeoboxSettings, client: httpx.AsyncClient) -> None:
        self._base = settings.base_url
        self._client = client
        self._headers: dict[str, str] = {}
        self._params: dict[str, str] = {}
        if settings.token is not None:
            self._headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        elif settings.apikey is not None:
            self._params["apikey"] = settings.apikey.get_secret_value()

    async def fetch_status(self, target: Target) -> Observation:
        """One status check: the task document, plus its progress while it is PROGRESS."""
        task = await self._task(target.remote_id)
        raw = task.get("state")
        word = raw if isinstance(raw, str) else json.dumps(raw)
        remote = STATES.get(word, Remote.UNKNOWN)
        name = task.get("name") if isinstance(task.get("name"), str) else None
        progress = None
        if remote is Remote.RUNNING:
            progress = await self._progress(target.remote_id)
        message = None
        if remote is Remote.FAILED:
            message = failure_message(task.get("result"))
        return Observation(
            remote=remote, raw_status=word, progress=progress, message=message, name=name
        )

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """The final task document as ``task.json``, then each output asset the result names."""
        uuid = target.remote_id
        response = await self._get(_task_path(uuid), what=f"geobox task {uuid}")
        task = _document(response)
        refs = [
            OutputRef(
                name="task.json",
                source=f"{NAME}:{_task_path(uuid)}",
                content=response.content,
                content_type=JSON,
            )
        ]
        result = task.get("result")
        if not isinstance(result, dict):
            return refs
        for key, (collection, archive_name) in ASSETS.items():
            asset = result.get(key)
            if not isinstance(asset, str) or not asset:
                continue
            refs.extend(await self._asset_refs(key, asset, collection, archive_name))
        return refs

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output: inline refs from memory, files from ``files/{uuid}/download/``."""
        return self._open(ref)

    async def abort(self, target: Target) -> None:
        """Ask Geobox to abort the task (``POST tasks/{uuid}/abort/``)."""
        uuid = target.remote_id
        await net.request(
            self._client,
            "POST",
            self._url(f"{_task_path(uuid)}abort/"),
            provider=NAME,
            what=f"geobox task {uuid}",
            headers=self._headers,
            params=self._params,
        )

    async def _task(self, uuid: str) -> dict[str, Any]:
        response = await self._get(_task_path(uuid), what=f"geobox task {uuid}")
        return _document(response)

    async def _progress(self, uuid: str) -> float | None:
        # progress is decoration: a failed or odd progress call must not cost the observation
        # the task document already gave us
        try:
            response = await self._get(f"{_task_path(uuid)}status/", what=f"geobox task {uuid}")
            body = net.json_body(response, provider=NAME)
        except TaskwardenError:
            return None
        if not isinstance(body, dict):
            return None
        return progress_fraction(body.get("current"), body.get("total"))

    async def _asset_refs(
        self, key: str, asset: str, collection: str, archive_name: str
    ) -> list[OutputRef]:
        info_path = (
            f"files/{_segment(asset)}/info/"
            if key == "file_uuid"
            else f"{collection}/{_segment(asset)}/"
        )
        response = await self._get(info_path, what=f"geobox {key[:-5]} {asset}", f="json")
        refs = [
            OutputRef(
                name=archive_name,
                source=f"{NAME}:{info_path}",
                content=response.content,
                content_type=response.headers.get("Content-Type", JSON),
            )
        ]
        if key == "file_uuid":
            info = _document(response)
            announced = info.get("name")
            name = net.safe_filename(announced) if isinstance(announced, str) else None
            refs.append(
                OutputRef(
                    name=name or asset,
                    source=f"{NAME}:files/{_segment(asset)}/download/",
                    key=f"{_FILE_KEY}{asset}",
                )
            )
        return refs

    @asynccontextmanager
    async def _open(self, ref: OutputRef) -> AsyncIterator[OutputStream]:
        if ref.content is not None:
            yield OutputStream(
                chunks=_one(ref.content),
                content_type=ref.content_type,
                length=len(ref.content),
                filename=None,
            )
            return
        if not ref.key.startswith(_FILE_KEY):
            raise RemoteNotFound(f"geobox output {ref.name!r} has no download", provider=NAME)
        file_uuid = ref.key[len(_FILE_KEY) :]
        async with net.stream(
            self._client,
            "GET",
            self._url(f"files/{_segment(file_uuid)}/download/"),
            provider=NAME,
            what=f"geobox file {file_uuid}",
            headers={**self._headers, "Accept-Encoding": "identity"},
            params=self._params,
        ) as response:
            length = net.content_length(response)
            yield OutputStream(
                chunks=net.iter_body(response, provider=NAME, expected=length),
                content_type=response.headers.get("Content-Type"),
                length=length,
                filename=net.content_disposition_filename(
                    response.headers.get("Content-Disposition")
                ),
            )

    async def _get(self, path: str, *, what: str, **params: str) -> httpx.Response:
        return await net.request(
            self._client,
            "GET",
            self._url(path),
            provider=NAME,
            what=what,
            headers=self._headers,
            params={**params, **self._params},
        )

    def _url(self, path: str) -> str:
        return self._base + path


def failure_message(result: Any) -> str | None:
    """Why a FAILURE task failed: ``result.detail`` (msg and type) or ``result.errors``."""
    if not isinstance(result, dict):
        return None
    detail = result.get("detail")
    if isinstance(detail, dict) and detail.get("msg"):
        msg = str(detail["msg"])
        kind = detail.get("type")
        return f"{kind}: {msg}" if isinstance(kind, str) and kind else msg
    if detail:
        return net.error_message({"detail": detail})
    if result.get("errors"):
        return net.error_message({"errors": result["errors"]})
    return None


def progress_fraction(current: Any, total: Any) -> float | None:
    """``current / total`` clamped to [0, 1], or None when the platform gave no usable numbers."""
    numbers = (int, float)
    if isinstance(current, bool) or isinstance(total, bool):
        return None
    if not isinstance(current, numbers) or not isinstance(total, numbers) or total <= 0:
        return None
    return min(1.0, max(0.0, float(current) / float(total)))


def _document(response: httpx.Response) -> dict[str, Any]:
    body = net.json_body(response, provider=NAME)
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{response.request.method} {response.request.url.path}: expected a JSON object,"
            f" got {type(body).__name__}",
            provider=NAME,
            status_code=response.status_code,
        )
    return body


def _task_path(uuid: str) -> str:
    return f"tasks/{_segment(uuid)}/"


def _segment(value: str) -> str:
    return quote(value, safe="")


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
