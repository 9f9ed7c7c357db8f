"""The EarthDaily EarthOne adapter: compute jobs and whole functions, as the official SDK
(``earthdaily-earthone`` 6.x, ``earthdaily.earthone.compute``) sees them.

What to register (see ``docs/providers/earthone.md``)::

    remote_id = "job:<job id>"            one job: Job.get / Job.wait_for_completion
    remote_id = "function:<function id>"  all its jobs: Function.wait_for_completion

A check is one request: ``GET /jobs/{id}``, or ``GET /functions/{id}?include=job.statistics``
(plus one ``limit=0`` count while the statistics name no finished job), however many jobs the
function has. How states map is in :mod:`.documents`.

Archived on success, for a job: ``job.json`` (its document), ``result`` (the blob
``compute/{namespace}/{function}/{job}`` that ``Job.result()`` reads, streamed; or
``no-result.json`` when the catalog has none) and ``log.txt`` (``Job.log()``'s text). For a
function: ``function.json``, ``jobs.json`` (every job's id and status) and the same three files
per job, in a folder of its own: ``<job id>/job.json``... A failed, cancelled or timed-out task
leaves (:meth:`list_diagnostics`) its document and log; a function that failed to build, its
document and build log.

Abort: ``POST /jobs/{id}/cancel``; for a function ``Function.cancel_jobs()``, i.e. ``POST
/jobs/cancel`` for all its jobs (the function itself is left ``ready``: stopping it would keep
jobs submitted later pending, which no one watching would see end).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from taskwarden import net
from taskwarden.config import Settings
from taskwarden.errors import OutputInvalid, RemoteNotFound, RequestRejected
from taskwarden.lifecycle import Observation
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.providers.earthone import documents
from taskwarden.providers.earthone.api import JSON, NAME, EarthOneApi, function_filter, segment

Kind = Literal["job", "function"]
SEPARATOR = "/"  # after a job's id: its folder inside a function's archive
BLOB_CONCURRENCY = 8  # result lookups in flight while a function's outputs are listed
MAX_NAMESPACES = 10_000
_LOG, _RESULT, _BUILD = "log:", "result:", "build:"  # OutputRef.key prefixes


def build(settings: Settings, client: httpx.AsyncClient) -> EarthOneProvider:
    """The EarthOne adapter for this process, sharing its HTTP client."""
    return EarthOneProvider(EarthOneApi(settings.providers.earthone, client))


def validate(settings: Settings, target: Target) -> None:
    """Refuse (RequestRejected) a remote id that names no job or function, or any params."""
    parse_target(target)


@dataclass(frozen=True)
class Watched:
    """A registration read: a job or a function, by id."""

    kind: Kind
    id: str


def parse_target(target: Target) -> Watched:
    kind, sep, ident = target.remote_id.partition(":")
    if not sep or kind not in ("job", "function"):
        raise _refused(f"remote_id must be job:<id> or function:<id> (got {target.remote_id!r})")
    if not ident or len(ident) > 256 or any(c in ident for c in "/?#% \t\n"):
        raise _refused(f"{ident!r} is not an EarthOne {kind} id")
    if target.params:
        raise _refused(f"no params are taken (got {sorted(target.params)})")
    return Watched("job" if kind == "job" else "function", ident)


class EarthOneProvider:
    """A :class:`~taskwarden.providers.base.Provider` (and ``Diagnoses``) for EarthOne."""

    name = NAME

    def __init__(self, api: EarthOneApi) -> None:
        self.api = api
        self._namespaces: dict[str, str] = {}  # function id → its storage namespace

    async def fetch_status(self, target: Target) -> Observation:
        """One check: the job's document, or the function's with its job statistics."""
        watched = parse_target(target)
        if watched.kind == "job":
            return documents.job_observation(await self.api.job(watched.id))
        doc = await self.api.function(watched.id, statistics=True)
        self._remember(doc)
        total = await self.api.count_jobs(watched.id) if documents.needs_count(doc) else None
        return documents.function_observation(doc, total)

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        watched = parse_target(target)
        if watched.kind == "job":
            job = await self.api.job(watched.id)
            return [self._document("job.json", job), *await self._job_files(job, "")]
        function = await self.api.function(watched.id, statistics=True)
        self._remember(function)
        jobs = [job async for page in self.api.jobs(watched.id) for job in page]
        gate = asyncio.Semaphore(BLOB_CONCURRENCY)

        async def of(job: dict[str, Any]) -> list[OutputRef]:
            folder = f"{job.get('id')}{SEPARATOR}"
            async with gate:
                return [
                    self._document(f"{folder}job.json", job),
                    *await self._job_files(job, folder),
                ]

        per_job = await asyncio.gather(*(of(job) for job in jobs))
        return [
            self._function_document(function),
            _summary(watched.id, jobs),
            *(ref for refs in per_job for ref in refs),
        ]

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        """A job's document and log; a function's document, its jobs' statuses and, when it
        failed to build, its build log."""
        watched = parse_target(target)
        if watched.kind == "job":
            job = await self.api.job(watched.id)
            return [self._document("job.json", job), *self._log(job, "")]
        function = await self.api.function(watched.id, statistics=True)
        refs = [self._function_document(function)]
        if function.get("status") == "build_failed":
            path = f"functions/{segment(watched.id)}/log"
            refs.append(OutputRef("build.log", f"{NAME}:compute/{path}", None, "text/plain",
                                  key=_BUILD + watched.id))  # fmt: skip
        else:
            jobs = [job async for page in self.api.jobs(watched.id) for job in page]
            refs.append(_summary(watched.id, jobs))
        return refs

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output: documents from memory, logs and results from the platform."""
        return self._open(ref)

    async def abort(self, target: Target) -> None:
        """Cancel the job, or every job of the function (``Function.cancel_jobs``)."""
        watched = parse_target(target)
        if watched.kind == "job":
            await self.api.post(f"jobs/{segment(watched.id)}/cancel", what=f"job {watched.id}")
            return
        body = {"filter": json.loads(function_filter(watched.id))}
        await self.api.post("jobs/cancel", what=f"jobs of function {watched.id}", body=body)

    # -- outputs -------------------------------------------------------------------------------
    async def _job_files(self, job: Mapping[str, Any], folder: str) -> list[OutputRef]:
        """A job's result (or the note that it has none) and its log."""
        refs: list[OutputRef] = []
        if job.get("status") == "success":
            refs.append(await self._result(job, folder))
        return [*refs, *self._log(job, folder)]

    async def _result(self, job: Mapping[str, Any], folder: str) -> OutputRef:
        """``Job.result_blob()``: the catalog's blob of the result, or a note of its absence."""
        job_id, function_id = str(job.get("id")), str(job.get("function_id"))
        namespace = await self._namespace(function_id)
        blob_id = f"compute/{namespace}/{function_id}/{job_id}"
        source = f"{NAME}:catalog/storage/{blob_id}"
        try:
            blob = await self.api.blob(blob_id)
        except RemoteNotFound:
            note = {
                "job_id": job_id,
                "result": None,
                "blob_id": blob_id,
                "why": "the catalog has no result blob for this job (Job.result() is None)",
            }
            return OutputRef(f"{folder}no-result.json", source, _encode(note), JSON)
        size = _dig(blob, "data", "attributes", "size_bytes")
        announced = size if isinstance(size, int) and not isinstance(size, bool) else -1
        return OutputRef(f"{folder}result", source, None, "application/octet-stream",
                         key=f"{_RESULT}{announced}:{blob_id}")  # fmt: skip

    def _log(self, job: Mapping[str, Any], folder: str) -> list[OutputRef]:
        if not job.get("last_execution_date") and job.get("status") in ("pending", "canceled"):
            return []  # it never ran: nothing was logged
        job_id = str(job.get("id"))
        return [OutputRef(f"{folder}log.txt", f"{NAME}:compute/jobs/{job_id}/log", None,
                          "text/plain; charset=utf-8", key=_LOG + job_id)]  # fmt: skip

    def _document(self, name: str, doc: Mapping[str, Any]) -> OutputRef:
        return OutputRef(name, f"{NAME}:compute/jobs/{doc.get('id')}", _encode(doc), JSON)

    def _function_document(self, doc: Mapping[str, Any]) -> OutputRef:
        source = f"{NAME}:compute/functions/{doc.get('id')}?include=job.statistics"
        return OutputRef("function.json", source, _encode(doc), JSON)

    @asynccontextmanager
    async def _open(self, ref: OutputRef) -> AsyncIterator[OutputStream]:
        if ref.content is not None:
            yield OutputStream(_one(ref.content), ref.content_type, len(ref.content))
            return
        async with AsyncExitStack() as stack:
            if ref.key.startswith(_LOG):
                yield await self._open_log(stack, ref.key[len(_LOG) :])
            elif ref.key.startswith(_RESULT):
                yield await self._open_result(stack, ref.key[len(_RESULT) :])
            elif ref.key.startswith(_BUILD):
                yield await self._open_build_log(stack, ref.key[len(_BUILD) :])
            else:
                raise RemoteNotFound(f"output {ref.name!r} has no download", provider=NAME)

    async def _open_log(self, stack: AsyncExitStack, job_id: str) -> OutputStream:
        url = f"{self.api.compute}/jobs/{segment(job_id)}/log"
        try:
            response = await self.api.open_stream(stack, url, what=f"log of job {job_id}")
        except RemoteNotFound:
            # a job that stopped before writing a line: kept as an empty log (Job.log() raises)
            return OutputStream(_one(b""), "text/plain; charset=utf-8", 0)
        return OutputStream(
            _rendered(net.iter_body(response, provider=NAME)), "text/plain; charset=utf-8"
        )

    async def _open_result(self, stack: AsyncExitStack, key: str) -> OutputStream:
        announced, _, blob_id = key.partition(":")
        url = await self.api.signed_url(blob_id)
        # a signed URL: no Authorization header, as the SDK's ThirdPartyService sends none
        response = await self.api.open_stream(
            stack, url, what=f"result of {blob_id}", authorized=False
        )
        length = net.content_length(response)
        if length is None and announced.isdigit():
            length = int(announced)  # the catalog's size_bytes, checked at the end
        body = net.iter_body(response, provider=NAME, expected=length)
        return OutputStream(body, "application/octet-stream", length)

    async def _open_build_log(self, stack: AsyncExitStack, function_id: str) -> OutputStream:
        url = f"{self.api.compute}/functions/{segment(function_id)}/log"
        response = await self.api.open_stream(stack, url, what=f"build log of {function_id}")
        return OutputStream(_gunzip(net.iter_body(response, provider=NAME)), "text/plain")

    async def _namespace(self, function_id: str) -> str:
        """The function's storage namespace (``Function.namespace``), asked once per process
        as the SDK's ``ComputeClient._namespace_cache`` does."""
        if function_id not in self._namespaces:
            self._remember(await self.api.function(function_id))
        namespace = self._namespaces.get(function_id)
        if namespace is None:
            raise RemoteNotFound(f"function {function_id} names no namespace", provider=NAME)
        return namespace

    def _remember(self, function: Mapping[str, Any]) -> None:
        fid, namespace = function.get("id"), function.get("namespace")
        if isinstance(fid, str) and isinstance(namespace, str) and namespace:
            if len(self._namespaces) >= MAX_NAMESPACES:
                self._namespaces.clear()
            self._namespaces[fid] = namespace


def _summary(function_id: str, jobs: Sequence[Mapping[str, Any]]) -> OutputRef:
    rows = [{k: job.get(k) for k in ("id", "status", "exit_code", "error_reason")} for job in jobs]
    source = f"{NAME}:compute/jobs?filter={function_filter(function_id)}"
    return OutputRef("jobs.json", source, _encode({"function_id": function_id, "jobs": rows}), JSON)


async def _rendered(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    text = documents.LogText()
    async for chunk in chunks:
        if out := text.feed(chunk):
            yield out
    if out := text.close():
        yield out


async def _gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # Function.build_log() decompresses the gzip body client-side
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        async for chunk in chunks:
            if out := inflate.decompress(chunk):
                yield out
        out = inflate.flush()
    except zlib.error as exc:
        raise OutputInvalid(f"the build log is not gzip ({exc})", provider=NAME) from exc
    if not inflate.eof:
        raise OutputInvalid("the build log's gzip stream is cut short", provider=NAME)
    if out:
        yield out


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _refused(reason: str) -> RequestRejected:
    return RequestRejected(f"invalid earthone registration: {reason}", provider=NAME)


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
