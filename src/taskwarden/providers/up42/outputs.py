"""What the UP42 adapter archives for a finished job, and how each output is read back.

    v1 job          job.json and tasks.json (the responses as served), every file of the job's
                    results tarball (or zip), data-json.geojson (``outputs/data-json/``), and for
                    each task ``task-<id>.log`` and ``task-<id>_quicklook_<name>``
    v1 job task     task.json (its element of ``tasks/``), every file of its results archive,
                    data-json.geojson, task.log, and ``quicklook_<name>`` (the SDK's names)
    v2 processing   job.json, and the STAC results :mod:`.stac` lists: collection.json, each
                    item's JSON and each item's assets

Links and special entries of a results archive are listed as skipped (the manifest's
``skipped``), as the SDK skipped them without a word.

Results: ``downloads/results/`` answers ``{"data": {"url": <signed URL>}}``; the URL is fetched
without our Authorization header, and when it is refused (a 4xx: expired or revoked) a fresh one
is asked for, up to three URLs per listing. The archive is spooled and checked once per listing
(:mod:`taskwarden.providers.up42.results`); each file is then streamed out of the spool.

Documents of at most ``INLINE_LIMIT`` bytes are read at listing time and archived from memory;
a larger one is streamed again when archived. Logs, data-json and quicklooks are optional: a 404
leaves them out rather than failing the archive.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import quote

from taskwarden import net
from taskwarden.config import Up42Settings
from taskwarden.errors import (
    CredentialsRejected,
    OutputInvalid,
    ProviderUnavailable,
    RemoteNotFound,
    RequestRejected,
    StorageUnavailable,
)
from taskwarden.providers.base import OutputRef, OutputStream
from taskwarden.providers.up42.api import NAME, Up42Api, v1_data
from taskwarden.providers.up42.results import (
    Spool,
    SpoolDir,
    scan,
    spool_limit,
    stream_member,
    write_spool,
)
from taskwarden.providers.up42.stac import Stac

INLINE_LIMIT = 8 * 1024 * 1024
URL_ATTEMPTS = 3
SPOOL_MAX_AGE = 6 * 3600.0  # an abandoned spool outlives any archive attempt by far
JSON, GEOJSON, TEXT = "application/json", "application/geo+json", "text/plain"
_MEMBER, _GET, _ANON = "member:", "get:", "anon:"


class _UrlRefused(Exception):
    """The signed URL was refused (expired or revoked); a fresh one may work."""


class Outputs:
    """Lists and opens UP42 outputs; keeps each target's spooled results between the two."""

    def __init__(self, api: Up42Api, settings: Up42Settings) -> None:
        self._api = api
        self._max_bytes = settings.results_max_bytes
        self._max_members = settings.results_max_members
        self._spools: dict[str, Spool] = {}
        self._dir = SpoolDir(settings.spool_dir, SPOOL_MAX_AGE)
        self.stac = Stac(api, settings.results_max_members)

    async def v1_job(self, key: str, job_path: str, job_id: str) -> list[OutputRef]:
        """A v1 job's outputs (``key`` names the watch's spool)."""
        what = f"up42 job {job_id}"
        job = await self._api.request("GET", self._api.url(job_path), what=what)
        listed = await self._api.request("GET", self._api.url(f"{job_path}/tasks/"), what=what)
        tasks = v1_data(listed) or []
        refs = [
            _inline("job.json", job.content, JSON, job_path),
            _inline("tasks.json", listed.content, JSON, f"{job_path}/tasks/"),
        ]
        extras = []
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, dict) and isinstance(task.get("id"), str):
                task_path = f"{job_path}/tasks/{quote(task['id'], safe='')}"
                extras.append((task_path, f"task-{task['id']}.log", f"task-{task['id']}_"))
        return await self._v1(key, job_path, refs, extras, what)

    async def v1_task(self, key: str, task_path: str, task: dict[str, Any]) -> list[OutputRef]:
        """A v1 job task's outputs; ``task`` is its element of ``tasks/``."""
        body = json.dumps(task, indent=2, sort_keys=True).encode()
        refs = [_inline("task.json", body, JSON, task_path)]
        what = f"up42 job task {task.get('id')}"
        return await self._v1(key, task_path, refs, [(task_path, "task.log", "")], what)

    async def processing(self, job_id: str) -> list[OutputRef]:
        """A processing job's document and its STAC results (:mod:`.stac`)."""
        path = f"v2/processing/jobs/{quote(job_id, safe='')}"
        what = f"up42 processing job {job_id}"
        response = await self._api.request("GET", self._api.url(path), what=what)
        refs = [_inline("job.json", response.content, JSON, path)]
        collection = collection_url(net.json_body(response, provider=NAME))
        if collection is not None:
            refs += await self.stac.results(collection, what)
        return refs

    @asynccontextmanager
    async def open(self, key: str, ref: OutputRef) -> AsyncIterator[OutputStream]:
        """Stream an output listed by this object."""
        if ref.content is not None:
            yield OutputStream(_once(ref.content), ref.content_type, len(ref.content))
            return
        if ref.key.startswith("asset:"):
            async with self.stac.open(ref) as stream:
                yield stream
            return
        if ref.key.startswith(_MEMBER):
            spool = self._spools.get(key)
            index = int(ref.key[len(_MEMBER) :])
            member = next((m for m in spool.members if m.index == index), None) if spool else None
            if spool is None or member is None:
                raise ProviderUnavailable(
                    f"the spooled results of {key} are gone; they will be downloaded again",
                    provider=NAME,
                )
            spool.touch()
            try:
                chunks = stream_member(spool, member, f"up42 results of {key}")
                yield OutputStream(chunks, ref.content_type, member.size)
            finally:
                if spool.done(index):
                    self._spools.pop(key, None)
            return
        url = ref.key.partition(":")[2]
        authenticated = ref.key.startswith(_GET)
        async with self._api.stream(url, what=ref.name, authenticated=authenticated) as response:
            length = net.content_length(response)
            yield OutputStream(
                net.iter_body(response, provider=NAME, expected=length),
                response.headers.get("Content-Type", ref.content_type),
                length,
            )

    async def _v1(
        self,
        key: str,
        path: str,
        refs: list[OutputRef],
        tasks: list[tuple[str, str, str]],
        what: str,
    ) -> list[OutputRef]:
        """Results, data-json, and each task's log and quicklooks, after ``refs``."""
        self._drop(key)
        self._dir.sweep(time.time())
        spool = await self._results(path, what)
        try:
            for member in spool.members if spool else []:
                kind = mimetypes.guess_type(member.name)[0] or "application/octet-stream"
                source = f"{path}/downloads/results/#{member.path}"
                refs.append(_ref(member.name, kind, source, f"{_MEMBER}{member.index}"))
            for entry in spool.contents.skipped if spool else []:
                source = f"{NAME}:{path}/downloads/results/#{entry.path}"
                refs.append(OutputRef(name=entry.path, source=source, skipped=entry.reason))
            data = await self.optional(
                self._api.url(f"{path}/outputs/data-json/"), "data-json.geojson", GEOJSON, what
            )
            refs += [data] if data is not None else []
            for task_path, log_name, prefix in tasks:
                log = await self.optional(self._api.url(f"{task_path}/logs"), log_name, TEXT, what)
                refs += [log] if log is not None else []
                refs += await self._quicklooks(task_path, prefix, what)
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        if spool is not None and spool.members:
            self._spools[key] = spool
        elif spool is not None:
            spool.close()
        return refs

    async def _quicklooks(self, task_path: str, prefix: str, what: str) -> list[OutputRef]:
        try:
            names, _ = await self._api.v1(f"{task_path}/outputs/quicklooks/", what=what)
        except RemoteNotFound:
            return []
        refs = []
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str) and name:
                path = f"{task_path}/outputs/quicklooks/{quote(name, safe='')}"
                kind = mimetypes.guess_type(name)[0] or "image/jpeg"
                url = self._api.url(path)
                refs.append(_ref(f"{prefix}quicklook_{name}", kind, path, f"{_GET}{url}"))
        return refs

    async def optional(self, url: str, name: str, kind: str, what: str) -> OutputRef | None:
        """A document read inline (streamed later when large), or None when it is not there."""
        authenticated = self._api.same_origin(url)
        key = f"{_GET if authenticated else _ANON}{url}"
        source = self._api.source(url)
        body = bytearray()
        try:
            async with self._api.stream(url, what=what, authenticated=authenticated) as response:
                kind = response.headers.get("Content-Type", kind).split(";")[0] or kind
                async for chunk in net.iter_body(response, provider=NAME):
                    body += chunk
                    if len(body) > INLINE_LIMIT:
                        return _ref(name, kind, source, key)
        except RemoteNotFound:
            return None
        return _inline(name, bytes(body), kind, source)

    async def _results(self, path: str, what: str) -> Spool | None:
        """The results tarball, spooled and checked; None when the platform has none."""
        last: Exception | None = None
        for _ in range(URL_ATTEMPTS):
            try:
                data, _ = await self._api.v1(f"{path}/downloads/results/", what=what)
            except RemoteNotFound:
                return None
            url = data.get("url") if isinstance(data, dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise OutputInvalid(f"{what}: downloads/results/ gave no URL", provider=NAME)
            try:
                return await self._download(url, f"{what} results")
            except _UrlRefused as exc:
                last = exc
        raise ProviderUnavailable(
            f"{what}: {URL_ATTEMPTS} signed results URLs were refused; last: {last}", provider=NAME
        )

    async def _download(self, url: str, what: str) -> Spool:
        file, path = self._dir.new_file()
        limit = spool_limit(self._max_bytes, self._max_members)
        try:
            async with AsyncExitStack() as stack:
                try:
                    response = await stack.enter_async_context(
                        self._api.stream(url, what=what, authenticated=False)
                    )
                except (RequestRejected, CredentialsRejected, RemoteNotFound) as exc:
                    raise _UrlRefused(str(exc)) from exc
                length = net.content_length(response)
                if length is not None and length > limit:
                    raise OutputInvalid(f"{what}: {length} bytes is over the limit of {limit}")
                free = self._dir.free_bytes()
                if length is not None and free is not None and length > free:
                    raise StorageUnavailable(f"{what}: {length} bytes, {free} free in the spool")
                chunks = net.iter_body(response, provider=NAME, expected=length)
                await write_spool(chunks, file, limit, what)
            contents = await asyncio.to_thread(scan, path, self._max_bytes, self._max_members, what)
        except BaseException:
            file.close()
            path.unlink(missing_ok=True)
            raise
        return Spool(path, time.time(), contents, {m.index for m in contents.members})

    def _drop(self, key: str) -> None:
        old = self._spools.pop(key, None)
        if old is not None:
            old.close()


def collection_url(job: Any) -> str | None:
    """``results.collection`` of a processing job document, when it names one."""
    results = job.get("results") if isinstance(job, dict) else None
    collection = results.get("collection") if isinstance(results, dict) else None
    if isinstance(collection, str) and collection.startswith(("http://", "https://")):
        return collection
    return None


def _inline(name: str, content: bytes, kind: str, source: str) -> OutputRef:
    return OutputRef(name=name, source=f"{NAME}:{source}", content=content, content_type=kind)


def _ref(name: str, kind: str, source: str, key: str) -> OutputRef:
    return OutputRef(name=name, source=f"{NAME}:{source}", content_type=kind, key=key)


async def _once(content: bytes) -> AsyncIterator[bytes]:
    yield content
