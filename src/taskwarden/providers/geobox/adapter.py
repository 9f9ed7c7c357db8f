"""The Geobox adapter: status, progress, outputs, diagnostics and abort of a ``geobox.task.Task``.

Paths are those of the official SDK (``geobox`` 2.11 on PyPI), relative to
``settings.providers.geobox.base_url`` (``https://api.geobox.ir/v1/``):

    GET  tasks/{uuid}/              the task document: state, name, result
    GET  tasks/{uuid}/status/       progress {current, total}; asked only while PROGRESS
    POST tasks/{uuid}/abort/        abort
    POST auth/token/                a password login (:mod:`.auth`)

and, for the assets a succeeded task's ``result`` names, their descriptions and downloads
(:mod:`.assets`). Unlike the SDK's ``wait()``, one status check costs one request except while
the task runs, every request has a timeout (the shared client's), and 429/5xx are errors, not
data. Auth is the SDK's precedence (token, API key, password); with none, requests go out
unauthenticated (a simulator with auth off).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import httpx

from taskwarden import net
from taskwarden.config import GeoboxSettings, Settings
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RemoteNotFound,
    TaskwardenError,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.providers.geobox.assets import BY_KEY, KINDS, AssetKind, download_name, segment
from taskwarden.providers.geobox.auth import NAME, Credentials
from taskwarden.providers.timestamps import epoch_seconds

STATES = {
    "PENDING": Remote.PENDING,
    "PROGRESS": Remote.RUNNING,
    "SUCCESS": Remote.SUCCEEDED,
    "FAILURE": Remote.FAILED,
    "ABORTED": Remote.CANCELLED,
}
# the task document's times: names from PROVIDERS.md, not the SDK (which names none)
TIMES = ("accepted_at", "started_at", "finished_at")
MAX_DETAIL = 200
_DOWNLOAD = "download:"  # OutputRef.key prefix: the result key, then the path to GET
JSON = "application/json"


def build(settings: Settings, client: httpx.AsyncClient) -> GeoboxProvider:
    """The Geobox adapter for this process, sharing its HTTP client."""
    return GeoboxProvider(settings.providers.geobox, client)


class GeoboxProvider:
    """A :class:`~taskwarden.providers.base.Provider` (and
    :class:`~taskwarden.providers.base.Diagnoses`) for Geobox tasks."""

    name = NAME

    def __init__(self, settings: GeoboxSettings, client: httpx.AsyncClient) -> None:
        self._base = settings.base_url
        self._client = client
        self.auth = Credentials(client, settings)

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
        message = failure_message(task.get("result")) if remote is Remote.FAILED else None
        created, started, ended = (epoch_seconds(task.get(key)) for key in TIMES)
        return Observation(
            remote=remote,
            raw_status=word,
            progress=progress,
            message=message,
            name=name,
            remote_created_at=created,
            remote_started_at=started,
            remote_ended_at=ended,
            details=result_details(task.get("result")),
        )

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """The final task document as ``task.json``, then each asset the result names: its
        description, and the bytes of a file, raster or 3D model."""
        uuid = target.remote_id
        response = await self._get(_task_path(uuid), what=f"geobox task {uuid}")
        refs = [OutputRef("task.json", f"{NAME}:{_task_path(uuid)}", response.content, JSON)]
        result = _document(response).get("result")
        if not isinstance(result, dict):
            return refs
        for kind in KINDS:
            asset = result.get(kind.key)
            if isinstance(asset, str) and asset:
                refs.extend(await self._asset_refs(kind, asset))
        return refs

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        """What a task that did not succeed leaves: its document as ``task.json``, with the
        ``result`` that holds its ``errors`` or ``detail`` (the SDK's ``Task.errors``)."""
        uuid = target.remote_id
        response = await self._get(_task_path(uuid), what=f"geobox task {uuid}")
        _document(response)
        return [OutputRef("task.json", f"{NAME}:{_task_path(uuid)}", response.content, JSON)]

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output: inline refs from memory, asset bytes from their download."""
        return self._open(ref)

    async def abort(self, target: Target) -> None:
        """Ask Geobox to abort the task (``POST tasks/{uuid}/abort/``)."""
        uuid = target.remote_id
        await self._call("POST", f"{_task_path(uuid)}abort/", what=f"geobox task {uuid}")

    async def _task(self, uuid: str) -> dict[str, Any]:
        return _document(await self._get(_task_path(uuid), what=f"geobox task {uuid}"))

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

    async def _asset_refs(self, kind: AssetKind, asset: str) -> list[OutputRef]:
        what = f"geobox {kind.key[:-5]} {asset}"
        response = await self._get(kind.info_path(asset), what=what, f="json")
        refs = [
            OutputRef(
                kind.archive_name,
                f"{NAME}:{kind.info_path(asset)}",
                response.content,
                response.headers.get("Content-Type", JSON),
            )
        ]
        if kind.download is None:
            return refs
        info, source = _document(response), asset
        if kind.key == "model_uuid" and isinstance(info.get("obj"), str) and info["obj"]:
            # Model.download: a model that names an obj model downloads that one's content
            source = info["obj"]
            info = _document(await self._get(kind.info_path(source), what=what, f="json"))
        path = kind.download_path(source)
        name = download_name(kind, info, source)
        refs.append(OutputRef(name, f"{NAME}:{path}", key=f"{_DOWNLOAD}{kind.key}:{path}"))
        return refs

    @asynccontextmanager
    async def _open(self, ref: OutputRef) -> AsyncIterator[OutputStream]:
        if ref.content is not None:
            yield OutputStream(_one(ref.content), ref.content_type, len(ref.content))
            return
        key, _, path = ref.key.removeprefix(_DOWNLOAD).partition(":")
        if not ref.key.startswith(_DOWNLOAD) or key not in BY_KEY or not path:
            raise RemoteNotFound(f"geobox output {ref.name!r} has no download", provider=NAME)
        async with AsyncExitStack() as stack:
            response = await self._stream(stack, path, what=f"geobox {key[:-5]} {ref.name}")
            length = net.content_length(response)
            named = net.content_disposition_filename(response.headers.get("Content-Disposition"))
            yield OutputStream(
                net.iter_body(response, provider=NAME, expected=length),
                response.headers.get("Content-Type"),
                length,
                named if BY_KEY[key].named_by_header else None,
            )

    async def _stream(self, stack: AsyncExitStack, path: str, *, what: str) -> httpx.Response:
        """Open a download on ``stack``; a 401 on a password login buys one login and retry."""
        headers = await self.auth.headers()
        for attempt in (1, 2):
            opening = net.stream(
                self._client, "GET", self._base + path, provider=NAME, what=what,
                headers={**headers, "Accept-Encoding": "identity"}, params=self.auth.params,
            )  # fmt: skip
            try:
                return await stack.enter_async_context(opening)
            except CredentialsRejected as exc:
                headers = await self._after_401(exc, headers, attempt)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _get(self, path: str, *, what: str, **params: str) -> httpx.Response:
        return await self._call("GET", path, what=what, params=params)

    async def _call(
        self, method: str, path: str, *, what: str, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """One request with the credentials; a 401 on a password login buys one login."""
        headers = await self.auth.headers()
        for attempt in (1, 2):
            try:
                return await net.request(
                    self._client, method, self._base + path, provider=NAME, what=what,
                    headers=headers, params={**(params or {}), **self.auth.params},
                )  # fmt: skip
            except CredentialsRejected as exc:
                headers = await self._after_401(exc, headers, attempt)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _after_401(
        self, exc: CredentialsRejected, sent: dict[str, str], attempt: int
    ) -> dict[str, str]:
        if exc.status_code != 401 or attempt > 1:
            raise exc
        fresh = await self.auth.after_401(sent)
        if fresh is None:
            raise exc
        return fresh


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


def result_details(result: Any) -> dict[str, Any] | None:
    """The small facts of ``result``: its scalar entries (an output's uuid), and a failure's
    ``detail.type``; never its errors (the message and the diagnostics hold those)."""
    if not isinstance(result, dict):
        return None
    facts: dict[str, Any] = {}
    for key, value in list(result.items())[:8]:
        if isinstance(value, str) and key not in ("errors", "detail"):
            facts[key] = value[:MAX_DETAIL]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            facts[key] = value
    detail = result.get("detail")
    if isinstance(detail, dict) and isinstance(detail.get("type"), str):
        facts["error_type"] = detail["type"][:MAX_DETAIL]
    return facts or None


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
    return f"tasks/{segment(uuid)}/"


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
