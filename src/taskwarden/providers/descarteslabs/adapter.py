"""The Descartes Labs adapter: vector copy and delete jobs (``AsyncJob``) and exports
(``ExportTask``), as the official SDK (``descarteslabs`` 1.x, ``descarteslabs.vectors``) sees them.

What to register (see ``docs/providers/descarteslabs.md``)::

    params {"kind": "copy"}                         remote_id = the NEW product's id
    params {"kind": "delete"}                       remote_id = the product's id
    params {"kind": "export", "product_id": P}      remote_id = the export id

Copy and delete accept ``product_id`` too, so a second delete on one product can be watched
under another remote id. Paths, relative to the vector and storage services::

    GET vector  /products/{id}/search/copy/status          {"data": {"attributes": {state, errors}}}
    GET vector  /products/{id}/search/delete/status        same, type delete_job
    GET vector  /products/{id}/search/export/{export_id}   404 until finished; then status,
                                                           exception_name, failure_type, runtime,
                                                           peak_memory_usage, labels
    GET vector  /products/{id}                             is the product there? (exports only)
    GET storage /data/get/{key}                            the exported GeoJSON (key = labels[3])
    GET storage /logs/get/{key}                            the export's log

How states map: copy and delete ``PENDING``, ``RUNNING``; ``DONE`` and ``SUCCESS`` succeed;
``FAILED`` (documented) and ``FAILURE`` (what the SDK checks) fail; and a non-empty ``errors``
list fails the job whatever its state says. An export's result is 404 until it ends, so a 404
means "running". A product that does not exist ends the watch in ``error``; an export id that
does not exist under an existing product cannot be told from a running export, and is ended by
the watch's timeout.

The platform has no way to cancel these jobs: :meth:`abort` refuses.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from taskwarden import net
from taskwarden.config import DescartesLabsSettings, Settings
from taskwarden.errors import (
    CredentialsRejected,
    OutputInvalid,
    ProviderUnavailable,
    RemoteNotFound,
    RequestRejected,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.providers.descarteslabs.auth import NAME, TokenSource

Kind = Literal["copy", "delete", "export"]
KINDS: tuple[Kind, ...] = ("copy", "delete", "export")
PARAMS = frozenset({"kind", "product_id", "key"})

JOB_STATES = {
    "PENDING": Remote.PENDING,
    "RUNNING": Remote.RUNNING,
    "DONE": Remote.SUCCEEDED,
    "SUCCESS": Remote.SUCCEEDED,
    "FAILED": Remote.FAILED,  # the documented word, which the SDK never recognises
    "FAILURE": Remote.FAILED,  # the word the SDK checks
}
EXPORT_STATES = {"SUCCESS": Remote.SUCCEEDED, "FAILURE": Remote.FAILED}
NOT_FINISHED = "404 (not finished)"  # the raw status of an export whose result is not there yet
PRODUCT_TTL = 600.0  # seconds a product seen to exist is not asked about again
MAX_PRODUCTS = 10_000
JSON = "application/json"
_DATA = "data:"  # OutputRef.key prefix of the exported data: its storage key follows


def build(settings: Settings, client: httpx.AsyncClient) -> DescartesLabsProvider:
    """The Descartes Labs adapter for this process, sharing its HTTP client."""
    return DescartesLabsProvider(settings.providers.descarteslabs, client)


def validate(settings: Settings, target: Target) -> None:
    """Refuse (RequestRejected) params that do not name a copy, delete or export job."""
    parse_target(target)


@dataclass(frozen=True)
class Job:
    """A registration read: which kind of job, on which product, and which export."""

    kind: Kind
    product_id: str
    export_id: str | None = None
    key: str | None = None  # the export's storage key, when the user knows it

    @property
    def status_path(self) -> str:
        product = f"products/{_segment(self.product_id)}/search"
        if self.kind == "export":
            assert self.export_id is not None
            return f"{product}/export/{_segment(self.export_id)}"
        return f"{product}/{self.kind}/status"

    @property
    def title(self) -> str:
        where = {"copy": "copy into", "delete": "delete from", "export": "export of"}[self.kind]
        return f"{where} {self.product_id}"


def parse_target(target: Target) -> Job:
    """Read a registration's params, or refuse it (RequestRejected) saying what is wrong."""
    params: Mapping[str, Any] = target.params or {}
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise _refused(f"unknown params {unknown}; allowed: kind, product_id, key")
    kind = params.get("kind")
    if kind not in KINDS:
        raise _refused(f"params.kind must be one of copy, delete, export (got {kind!r})")
    product = params.get("product_id")
    if product is not None and (not isinstance(product, str) or not _good_id(product)):
        raise _refused(f"params.product_id must be a product id (got {product!r})")
    key = params.get("key")
    if key is not None and (kind != "export" or not isinstance(key, str) or not key):
        raise _refused("params.key is an export's storage key: a string, for kind export only")
    if kind == "export":
        if product is None:
            raise _refused("an export needs params.product_id (remote_id is the export id)")
        return Job("export", product, export_id=target.remote_id, key=key)
    return Job(kind, product or target.remote_id)


class DescartesLabsProvider:
    """A :class:`~taskwarden.providers.base.Provider` for Descartes Labs vector jobs."""

    name = NAME

    def __init__(self, settings: DescartesLabsSettings, client: httpx.AsyncClient) -> None:
        self._vector = settings.vector_url
        self._storage = settings.storage_url
        self._client = client
        self.auth = TokenSource(client, settings)
        self._products: dict[str, float] = {}  # product id → monotonic time it was seen

    async def fetch_status(self, target: Target) -> Observation:
        """One status check: the job's status document, or the export's result (404: running)."""
        job = parse_target(target)
        if job.kind != "export":
            response = await self._get(self._vector, job.status_path, what=f"{job.kind} job")
            return job_observation(job, _attributes(response))
        try:
            response = await self._get(self._vector, job.status_path, what="export result")
        except RemoteNotFound:
            await self._check_product(job.product_id)
            return Observation(Remote.RUNNING, NOT_FINISHED, name=job.title)
        return export_observation(job, _attributes(response))

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """A job's final status as ``status.json``; an export's result as ``result.json``, its
        GeoJSON as ``export.geojson`` and its log as ``export.log``."""
        job = parse_target(target)
        response = await self._get(self._vector, job.status_path, what=f"{job.kind} result")
        source = f"{NAME}:vector/{job.status_path}"
        if job.kind != "export":
            return [OutputRef("status.json", source, response.content, JSON)]
        attributes = _attributes(response)
        refs = [OutputRef("result.json", source, response.content, JSON)]
        key = storage_key(attributes) or job.key
        if key is None:
            raise OutputInvalid(
                f"export {job.export_id}: the result names no storage key (labels[3])"
                " and params.key is not set",
                provider=NAME,
            )
        data_path = f"data/get/{_key_path(key)}"
        refs.append(
            OutputRef(
                "export.geojson",
                f"{NAME}:storage/{data_path}",
                None,
                "application/geo+json",
                key=_DATA + key,
            )
        )
        log = await self._log(attributes, key)
        if log is not None:
            refs.append(log)
        return refs

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output: inline refs from memory, the export from storage ``data/get``."""
        return self._open(ref)

    async def abort(self, target: Target) -> None:
        """Refuse: Descartes Labs has no API to cancel a copy, delete or export job."""
        raise RequestRejected(
            "Descartes Labs has no API to cancel copy, delete or export jobs;"
            " the watch can be stopped, the remote job runs on",
            provider=NAME,
        )

    async def _log(self, attributes: Mapping[str, Any], key: str) -> OutputRef | None:
        # the SDK's ExportTask.log reads logs/get/{result_key}, skipping empty logs and 404s
        size = attributes.get("log_size_bytes")
        if isinstance(size, int) and not isinstance(size, bool) and size <= 0:
            return None
        result_key = attributes.get("result_key")
        log_key = result_key if isinstance(result_key, str) and result_key else key
        path = f"logs/get/{_key_path(log_key)}"
        try:
            response = await self._get(self._storage, path, what="export log")
        except RemoteNotFound:
            return None
        return OutputRef(
            "export.log",
            f"{NAME}:storage/{path}",
            response.content,
            response.headers.get("Content-Type", "text/plain"),
        )

    async def _check_product(self, product_id: str) -> None:
        """Raise RemoteNotFound unless the product exists (remembered for PRODUCT_TTL)."""
        now = time.monotonic()
        seen = self._products.get(product_id)
        if seen is not None and now - seen < PRODUCT_TTL:
            return
        await self._get(
            self._vector, f"products/{_segment(product_id)}", what=f"product {product_id}"
        )
        if len(self._products) >= MAX_PRODUCTS:
            self._products.clear()
        self._products[product_id] = now

    @asynccontextmanager
    async def _open(self, ref: OutputRef) -> AsyncIterator[OutputStream]:
        if ref.content is not None:
            yield OutputStream(_one(ref.content), ref.content_type, len(ref.content))
            return
        if not ref.key.startswith(_DATA):
            raise RemoteNotFound(f"output {ref.name!r} has no download", provider=NAME)
        url = f"{self._storage}/data/get/{_key_path(ref.key[len(_DATA) :])}"
        async with AsyncExitStack() as stack:
            response = await self._stream(stack, url)
            length = net.content_length(response)
            yield OutputStream(
                net.iter_body(response, provider=NAME, expected=length),
                response.headers.get("Content-Type") or ref.content_type,
                length,
            )

    async def _stream(self, stack: AsyncExitStack, url: str) -> httpx.Response:
        """Open a download on ``stack``; a 401 buys one new token and one retry."""
        token = await self.auth.current()
        for attempt in (1, 2):
            opening = net.stream(
                self._client,
                "GET",
                url,
                provider=NAME,
                what="exported data",
                headers={**_bearer(token), "Accept-Encoding": "identity"},
            )
            try:
                return await stack.enter_async_context(opening)
            except CredentialsRejected as exc:
                token = await self._retry_token(exc, token, attempt)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _get(self, base: str, path: str, *, what: str) -> httpx.Response:
        """GET ``base/path`` with the bearer token; a 401 buys one new token and one retry."""
        token = await self.auth.current()
        for attempt in (1, 2):
            try:
                return await net.request(
                    self._client,
                    "GET",
                    f"{base}/{path}",
                    provider=NAME,
                    what=what,
                    headers=_bearer(token),
                )
            except CredentialsRejected as exc:
                token = await self._retry_token(exc, token, attempt)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _retry_token(self, exc: CredentialsRejected, token: str | None, attempt: int) -> str:
        if exc.status_code != 401 or attempt > 1:
            raise exc
        fresh = await self.auth.after_401(token)
        if fresh is None:
            raise exc
        return fresh


def job_observation(job: Job, attributes: Mapping[str, Any]) -> Observation:
    """What a copy or delete job's status attributes say; ``errors`` fail it in any state."""
    raw = attributes.get("state")
    word = raw if isinstance(raw, str) else json.dumps(raw)
    remote = JOB_STATES.get(word, Remote.UNKNOWN)
    errors = attributes.get("errors")
    message = None
    if errors:
        said = net.error_message({"errors": errors}) or json.dumps(errors)
        count = len(errors) if isinstance(errors, list) else 1
        remote = Remote.FAILED
        message = f"{job.kind} job reported {count} error{'s' if count != 1 else ''}: {said}"
    elif remote is Remote.FAILED:
        message = f"{job.kind} job for product {job.product_id} ended {word}, no errors listed"
    return Observation(remote, word, message=message, name=job.title)


def export_observation(job: Job, attributes: Mapping[str, Any]) -> Observation:
    """What a finished export's result says; a failure names exception, type, time, memory."""
    raw = attributes.get("status")
    word = raw if isinstance(raw, str) else json.dumps(raw)
    remote = EXPORT_STATES.get(word, Remote.UNKNOWN)
    message = export_failure(attributes) if remote is Remote.FAILED else None
    return Observation(remote, word, message=message, name=job.title)


def export_failure(attributes: Mapping[str, Any]) -> str:
    """``exception_name``, ``failure_type``, ``runtime`` and ``peak_memory_usage``, in words."""
    exception = _given(attributes.get("exception_name"))
    kind = _given(attributes.get("failure_type"))
    parts = [f"exception {exception}" if exception else "no exception named"]
    if kind:
        why = {"executable_failure": "resource limits reached", "exception": "it raised"}
        parts[0] += f" (failure_type {kind}" + (f": {why[kind]})" if kind in why else ")")
    runtime = attributes.get("runtime")
    if isinstance(runtime, int | float) and not isinstance(runtime, bool):
        parts.append(f"runtime {runtime:g} s")
    memory = attributes.get("peak_memory_usage")
    if isinstance(memory, int | float) and not isinstance(memory, bool):
        parts.append(f"peak_memory_usage {int(memory)} bytes ({memory / 2**20:.1f} MiB)")
    return "export failed: " + "; ".join(parts)


def storage_key(attributes: Mapping[str, Any]) -> str | None:
    """The storage key of an export's data: ``labels[3]``, as the SDK's ExportTask reads it."""
    labels = attributes.get("labels")
    if isinstance(labels, list) and len(labels) > 3 and isinstance(labels[3], str) and labels[3]:
        return labels[3]
    return None


def _attributes(response: httpx.Response) -> dict[str, Any]:
    body = net.json_body(response, provider=NAME)
    data = body.get("data") if isinstance(body, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(attributes, dict):
        raise ProviderUnavailable(
            f"GET {response.request.url.path}: expected a JSON:API document"
            " {data: {attributes: {...}}}",
            provider=NAME,
            status_code=response.status_code,
        )
    return attributes


def _given(value: Any) -> str | None:
    # the service documents "None" (the string) for "no exception"
    if not isinstance(value, str) or value.strip() in ("", "None", "null"):
        return None
    return value.strip()


def _good_id(value: str) -> bool:
    return 0 < len(value) <= 256 and "/" not in value and value not in (".", "..")


def _refused(reason: str) -> RequestRejected:
    return RequestRejected(f"invalid descarteslabs registration: {reason}", provider=NAME)


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _segment(value: str) -> str:
    # the SDK formats ids into paths as they are; ':' (namespace separator) stays readable
    return quote(value, safe=":")


def _key_path(key: str) -> str:
    # storage keys may hold '/', which the SDK sends as path separators
    return quote(key, safe=":/")


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
