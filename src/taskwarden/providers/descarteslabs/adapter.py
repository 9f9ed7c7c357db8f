"""The Descartes Labs adapter: vector copy and delete jobs (``AsyncJob``) and exports
(``ExportTask``), as the official SDK (``descarteslabs`` 1.12.1, ``descarteslabs.vectors``) sees
them. These services belong to the 1.x platform: 3.x has no vector copy, export or storage.

What to register (see ``docs/providers/descarteslabs.md``)::

    params {"kind": "copy"}                         remote_id = the NEW product's id
    params {"kind": "delete"}                       remote_id = the product's id
    params {"kind": "export", "product_id": P}      remote_id = the export id

Copy and delete accept ``product_id`` too, so a second delete on one product can be watched
under another remote id; an export accepts ``key`` and ``not_found_after``. Paths, relative to
the vector and storage services::

    GET vector  /products/{id}/search/copy/status          {"data": {"attributes": {state, errors}}}
    GET vector  /products/{id}/search/delete/status        same, type delete_job
    GET vector  /products/{id}/search/export/{export_id}   404 until finished; then status,
                                                           exception_name, failure_type, runtime,
                                                           peak_memory_usage, labels
    GET vector  /products/{id}                             is the product there? (exports only)
    GET storage /data/get/{key}                            the exported GeoJSON (key = labels[3])
    GET storage /logs/get/{key}                            the export's log

How states map: :mod:`.observations` (``errors`` fail a job only once its state is final, as in
the SDK). An export's result is 404 until it ends, so a 404 means "running". A product that
does not exist ends the watch in ``error``; an export id that stays 404 under an existing
product ends in ``error`` too, ``not_found_after`` seconds after this worker process first saw
it missing (the platform cannot tell an unknown export from a running one).

The platform has no way to cancel these jobs: :meth:`abort` refuses.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
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
from taskwarden.providers.descarteslabs.observations import (
    export_observation,
    job_observation,
    stacktrace,
    storage_key,
)

Kind = Literal["copy", "delete", "export"]
KINDS: tuple[Kind, ...] = ("copy", "delete", "export")
PARAMS = frozenset({"kind", "product_id", "key", "not_found_after"})

NOT_FINISHED = "404 (not finished)"  # the raw status of an export whose result is not there yet
PRODUCT_TTL = 600.0  # seconds a product seen to exist is not asked about again
MAX_REMEMBERED = 10_000  # products seen, and exports seen missing, per process
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
    not_found_after: float | None = None  # this watch's grace for a missing export

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
        raise _refused(f"unknown params {unknown}; allowed: {', '.join(sorted(PARAMS))}")
    kind = params.get("kind")
    if kind not in KINDS:
        raise _refused(f"params.kind must be one of copy, delete, export (got {kind!r})")
    product = params.get("product_id")
    if product is not None and (not isinstance(product, str) or not _good_id(product)):
        raise _refused(f"params.product_id must be a product id (got {product!r})")
    key = params.get("key")
    if key is not None and (kind != "export" or not isinstance(key, str) or not key):
        raise _refused("params.key is an export's storage key: a string, for kind export only")
    grace = _seconds(params.get("not_found_after"))
    if "not_found_after" in params and (kind != "export" or grace is None):
        raise _refused("params.not_found_after is seconds (> 0), for kind export only")
    if kind == "export":
        if product is None:
            raise _refused("an export needs params.product_id (remote_id is the export id)")
        return Job("export", product, target.remote_id, key, grace)
    return Job(kind, product or target.remote_id)


class DescartesLabsProvider:
    """A :class:`~taskwarden.providers.base.Provider` (and
    :class:`~taskwarden.providers.base.Diagnoses`) for Descartes Labs vector jobs.

    ``clock`` (monotonic seconds) times products seen and exports seen missing; tests set it.
    """

    name = NAME

    def __init__(self, settings: DescartesLabsSettings, client: httpx.AsyncClient) -> None:
        self._vector = settings.vector_url
        self._storage = settings.storage_url
        self._not_found_after = settings.not_found_after
        self._client = client
        self.auth = TokenSource(client, settings)
        self.clock: Callable[[], float] = time.monotonic
        self._products: dict[str, float] = {}  # product id → when it was seen
        self._missing: dict[tuple[str, str], float] = {}  # (product, export) → first 404 seen

    async def fetch_status(self, target: Target) -> Observation:
        """One status check: the job's status document, or the export's result (404: running,
        until ``not_found_after``)."""
        job = parse_target(target)
        if job.kind != "export":
            response = await self._get(self._vector, job.status_path, what=f"{job.kind} job")
            return job_observation(job.kind, job.product_id, job.title, _attributes(response))
        try:
            response = await self._get(self._vector, job.status_path, what="export result")
        except RemoteNotFound as missing:
            await self._check_product(job.product_id)
            self._give_up_on(job, missing)
            return Observation(Remote.RUNNING, NOT_FINISHED, name=job.title)
        self._missing.pop((job.product_id, job.export_id or ""), None)
        return export_observation(job.title, _attributes(response))

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

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        """What a job or export that did not succeed leaves: the job's status document
        (``status.json``, its ``errors``); an export's result (``result.json``: exception name,
        failure type, runtime, peak memory), its ``stacktrace.txt`` and its log
        (``export.log``). An export still 404 (timed out) has none."""
        job = parse_target(target)
        try:
            response = await self._get(self._vector, job.status_path, what=f"{job.kind} result")
        except RemoteNotFound:
            if job.kind == "export":
                return []
            raise
        source = f"{NAME}:vector/{job.status_path}"
        if job.kind != "export":
            return [OutputRef("status.json", source, response.content, JSON)]
        attributes = _attributes(response)
        refs = [OutputRef("result.json", source, response.content, JSON)]
        trace = stacktrace(attributes)
        if trace is not None:
            refs.append(OutputRef("stacktrace.txt", source, trace.encode(), "text/plain"))
        key = storage_key(attributes) or job.key
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

    def _give_up_on(self, job: Job, missing: RemoteNotFound) -> None:
        """Raise RemoteNotFound once ``job``'s export has been missing past its grace."""
        now, grace = self.clock(), job.not_found_after or self._not_found_after
        key = (job.product_id, job.export_id or "")
        if key not in self._missing and len(self._missing) >= MAX_REMEMBERED:
            self._missing.clear()
        first = self._missing.setdefault(key, now)
        if now - first < grace:
            return
        raise RemoteNotFound(
            f"export {job.export_id} of product {job.product_id} still not found"
            f" {now - first:.0f} s after this worker first asked (not_found_after {grace:g} s;"
            f" a running export is 404 too): {missing}",
            provider=NAME,
            status_code=404,
        )

    async def _log(self, attributes: Mapping[str, Any], key: str | None) -> OutputRef | None:
        # the SDK's ExportTask.log reads logs/get/{result_key}, skipping empty logs and 404s
        size = attributes.get("log_size_bytes")
        if isinstance(size, int) and not isinstance(size, bool) and size <= 0:
            return None
        result_key = attributes.get("result_key")
        log_key = result_key if isinstance(result_key, str) and result_key else key
        if log_key is None:
            return None
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
        now = self.clock()
        seen = self._products.get(product_id)
        if seen is not None and now - seen < PRODUCT_TTL:
            return
        await self._get(
            self._vector, f"products/{_segment(product_id)}", what=f"product {product_id}"
        )
        if len(self._products) >= MAX_REMEMBERED:
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


def _seconds(value: Any) -> float | None:
    # a number, or its text (the CLI's --param not_found_after=600); positive and finite
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < float("inf") else None


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
