"""The isahit lab adapter: watch one annotation task, or a whole batch, through the task list.

isahit has no per-task endpoint: the SDK (``isahitlab`` on PyPI, ``TaskActions.tasks``) reads
everything from the paged list, relative to ``settings.providers.isahit.base_url``
(``https://hub-api.isahit.com/``)::

    GET api/task-manager/tasks?pagination=true&page=N&limit=100&projectId=P
        &batchIds=…&statuses=…&taskIds=…&optionalFields=data&optionalFields=jobs…
        → {docs, totalDocs, limit, totalPages, page, pagingCounter, hasPrevPage, hasNextPage,
           prevPage, nextPage}
    GET api/task-manager/batches/{id}      only to tell an unknown batch from an empty one

Registrations (``params``): ``project_id`` (or the setting), ``kind`` (``task``, the default:
``remote_id`` is a task id; ``batch``: it is a batch id), ``optional_fields`` (what the archive
asks for, a list or a comma-separated string; ``data``, ``jobs``, ``metrics`` by default).

One status check of a task is one request (``taskIds``, ``limit=1``); of a batch, two counts
whatever its size (``limit=1``: every task, then those ``complete`` or ``reviewed``), and the
batch is final when the counts meet. isahit has no failure or cancellation, and can reopen a
final task: a watch stops at the first final word and says so (:data:`REOPENABLE`).

Archive: a task is ``task.json``; a batch is ``batch.json`` (a summary: every task's id, name,
status) and ``task-<id>.json`` per task. The batch's tasks are listed from light pages (no
optional fields); their full documents are fetched when the archive opens them, a page of 100
at a time and held only until each is taken (:class:`_PageCache`): memory stays at one page of
full documents and a short line per task, and the requests at two per hundred tasks.
"""

from __future__ import annotations

import json
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from taskwarden import net
from taskwarden.config import IsahitSettings, Settings
from taskwarden.errors import ProviderUnavailable, RemoteNotFound, RequestRejected
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.providers.isahit.client import IsahitApi

NAME = "isahit"
TASKS = "api/task-manager/tasks"
STATES = {
    "pending": Remote.PENDING,
    "configuring": Remote.PENDING,
    "to-review": Remote.RUNNING,
    "complete": Remote.SUCCEEDED,
    "reviewed": Remote.SUCCEEDED,
}
FINAL_WORDS = ("complete", "reviewed")
OPTIONAL_FIELDS = ("data", "jobs", "metrics", "data.mask", "jobs.history")
DEFAULT_FIELDS = ("data", "jobs", "metrics")
PARAMS = ("kind", "project_id", "optional_fields")
PAGE_SIZE = 100  # the SDK's page
REOPENABLE = (
    "isahit lab may reopen a complete or reviewed task (redo, or send back to review): the watch"
    " stopped at the first final word it saw and archives the task as it is then"
)
JSON = "application/json"


def build(settings: Settings, client: httpx.AsyncClient) -> IsahitProvider:
    """The isahit lab adapter for this process, sharing its HTTP client."""
    return IsahitProvider(settings.providers.isahit, client)


def validate(settings: Settings, target: Target) -> None:
    """Refuse (RequestRejected) unknown params, a bad kind or field, or a missing project."""
    watched(target, settings.providers.isahit.project_id)


@dataclass(frozen=True)
class Watched:
    """What a registration asks for: a task or a batch of a project, and what to archive."""

    kind: Literal["task", "batch"]
    remote_id: str
    project_id: str
    fields: tuple[str, ...]


def watched(target: Target, default_project: str | None = None) -> Watched:
    """Read a target's params; a malformed registration is :class:`RequestRejected`."""
    params = dict(target.params)
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise RequestRejected(
            f"isahit params {unknown} are unknown; use {', '.join(PARAMS)}", provider=NAME
        )
    kind = params.get("kind", "task")
    if kind not in ("task", "batch"):
        raise RequestRejected(
            f"isahit params.kind is 'task' or 'batch', not {kind!r}", provider=NAME
        )
    project = params.get("project_id", default_project)
    if not isinstance(project, str) or not project.strip():
        raise RequestRejected(
            "isahit registrations need params.project_id"
            " (or TASKWARDEN_PROVIDERS__ISAHIT__PROJECT_ID)",
            provider=NAME,
        )
    fields = params.get("optional_fields", DEFAULT_FIELDS)
    if isinstance(fields, str):  # the CLI's --param optional_fields=data,jobs
        fields = [field.strip() for field in fields.split(",") if field.strip()]
    if not isinstance(fields, list | tuple) or not all(f in OPTIONAL_FIELDS for f in fields):
        raise RequestRejected(
            f"isahit params.optional_fields is a list (or a comma-separated string) among"
            f" {list(OPTIONAL_FIELDS)}",
            provider=NAME,
        )
    return Watched(kind, target.remote_id, project, tuple(dict.fromkeys(fields)))


@dataclass(frozen=True)
class Page:
    """One page of the task list."""

    docs: list[dict[str, Any]]
    total: int
    next_page: int | None


class IsahitProvider:
    """A :class:`~taskwarden.providers.base.Provider` for isahit lab tasks and batches."""

    name = NAME

    def __init__(self, settings: IsahitSettings, client: httpx.AsyncClient) -> None:
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        self._api = IsahitApi(client, settings.base_url, settings.access_id, secret)
        self._default_project = settings.project_id
        self._pages = _PageCache()

    async def fetch_status(self, target: Target) -> Observation:
        """One status check: the task's word, or how many of the batch's tasks are final."""
        what = watched(target, self._default_project)
        if what.kind == "batch":
            return await self._batch_status(what)
        doc = await self._task(what, ())
        raw = doc.get("status")
        word = raw if isinstance(raw, str) else json.dumps(raw)
        remote = STATES.get(word, Remote.UNKNOWN)
        name = doc.get("name") if isinstance(doc.get("name"), str) else None
        message = REOPENABLE if remote is Remote.SUCCEEDED else None
        return Observation(remote=remote, raw_status=word, message=message, name=name)

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """``task.json``; or ``batch.json`` then ``task-<id>.json`` for each task of the batch."""
        what = watched(target, self._default_project)
        if what.kind == "batch":
            return await self._batch_outputs(what)
        doc = await self._task(what, what.fields)
        return [
            OutputRef(
                name="task.json",
                source=f"{NAME}:{TASKS}?taskIds={what.remote_id}",
                content=encode(doc),
                content_type=JSON,
            )
        ]

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output: inline ones from memory, a batch's tasks from their list page."""
        return self._open(target, ref)

    async def abort(self, target: Target) -> None:
        """isahit lab cannot stop an annotation task: refuse, so that nobody thinks it did."""
        raise RequestRejected(
            "isahit lab has no way to stop an annotation task; nothing was sent to the platform",
            provider=NAME,
        )

    # -- status --------------------------------------------------------------------------------
    async def _batch_status(self, what: Watched) -> Observation:
        total = (await self._page(what, 1, limit=1)).total
        if total == 0:
            # an unknown batch is a 404 here; a known one without tasks yet is only pending
            batch = quote(what.remote_id, safe="")
            await self._api.get(
                f"api/task-manager/batches/{batch}", (), what=f"isahit batch {what.remote_id}"
            )
            return Observation(Remote.PENDING, "0/0 final", message="the batch has no tasks yet")
        final = min(total, (await self._page(what, 1, limit=1, statuses=FINAL_WORDS)).total)
        raw = f"{final}/{total} final"
        if final == total:
            return Observation(Remote.SUCCEEDED, raw, progress=1.0, message=REOPENABLE)
        remote = Remote.RUNNING if final else Remote.PENDING
        return Observation(remote, raw, progress=final / total)

    async def _task(self, what: Watched, fields: Sequence[str]) -> dict[str, Any]:
        """The task's document; one the list does not return is :class:`RemoteNotFound`."""
        query = _query(what.project_id, 1, 1, ("taskIds", what.remote_id), fields=fields)
        page = await self._get(query, f"isahit task {what.remote_id}")
        for doc in page.docs:
            if doc.get("_id") == what.remote_id:
                return doc
        raise RemoteNotFound(
            f"isahit task {what.remote_id} not found: the task list of project"
            f" {what.project_id} does not return it",
            provider=NAME,
        )

    # -- archive -------------------------------------------------------------------------------
    async def _batch_outputs(self, what: Watched) -> list[OutputRef]:
        entries: list[dict[str, Any]] = []
        refs: list[OutputRef] = []
        seen: set[str] = set()
        async for number, page in self._walk(what):
            for doc in page.docs:
                task_id = doc.get("_id")
                if not isinstance(task_id, str) or not task_id or task_id in seen:
                    continue  # a task the list moved onto a later page is listed once
                seen.add(task_id)
                entries.append(
                    {key: doc.get(key) for key in ("_id", "name", "status", "updatedAt")}
                )
                refs.append(
                    OutputRef(
                        name=f"task-{task_id}.json",
                        source=f"{NAME}:{TASKS}?taskIds={task_id}",
                        content_type=JSON,
                        key=f"{number}:{task_id}",
                    )
                )
        statuses = Counter(str(entry["status"]) for entry in entries)
        summary = {
            "batch_id": what.remote_id,
            "project_id": what.project_id,
            "tasks_total": len(entries),
            "statuses": dict(sorted(statuses.items())),
            "all_final": all(entry["status"] in FINAL_WORDS for entry in entries),
            "may_reopen": True,
            "note": REOPENABLE,
            "optional_fields": list(what.fields),
            "tasks": entries,
        }
        batch = OutputRef(
            name="batch.json",
            source=f"{NAME}:{TASKS}?batchIds={what.remote_id}",
            content=encode(summary),
            content_type=JSON,
        )
        return [batch, *refs]

    async def _walk(self, what: Watched) -> AsyncIterator[tuple[int, Page]]:
        """The batch's light pages (no optional fields), following ``nextPage``."""
        number, visited = 1, set()
        while True:
            visited.add(number)
            page = await self._page(what, number, limit=PAGE_SIZE)
            yield number, page
            if page.next_page is None:
                return
            if page.next_page in visited:
                raise ProviderUnavailable(
                    f"GET {TASKS}: page {number}'s nextPage is {page.next_page}, already read",
                    provider=NAME,
                )
            number = page.next_page

    @asynccontextmanager
    async def _open(self, target: Target, ref: OutputRef) -> AsyncIterator[OutputStream]:
        body = ref.content
        if body is None:
            number, _, task_id = ref.key.partition(":")
            if not number.isdigit() or not task_id:
                raise RemoteNotFound(f"isahit output {ref.name!r} has no task", provider=NAME)
            what = watched(target, self._default_project)
            body = encode(await self._member(what, int(number), task_id))
        yield OutputStream(chunks=_one(body), content_type=JSON, length=len(body))

    async def _member(self, what: Watched, number: int, task_id: str) -> dict[str, Any]:
        """A batch task's full document, from its list page (fetched once for its 100)."""
        key = (what.project_id, what.remote_id, what.fields, number)
        doc = self._pages.take(key, task_id)
        if doc is None:
            page = await self._page(what, number, limit=PAGE_SIZE, fields=what.fields)
            self._pages.put(key, page.docs)
            doc = self._pages.take(key, task_id)
        if doc is None:  # the list has moved since it was walked: ask for the task alone
            doc = await self._task(
                Watched("task", task_id, what.project_id, what.fields), what.fields
            )
        return doc

    # -- the list ------------------------------------------------------------------------------
    async def _page(
        self,
        what: Watched,
        number: int,
        *,
        limit: int,
        statuses: Sequence[str] = (),
        fields: Sequence[str] = (),
    ) -> Page:
        query = _query(
            what.project_id, number, limit, ("batchIds", what.remote_id), statuses, fields
        )
        return await self._get(query, f"isahit batch {what.remote_id}")

    async def _get(self, query: list[tuple[str, str]], what: str) -> Page:
        response = await self._api.get(TASKS, query, what=what)
        return parse_page(response)


def parse_page(response: httpx.Response) -> Page:
    """A page of the task list, checked enough to be walked safely."""
    body = net.json_body(response, provider=NAME)
    docs = body.get("docs") if isinstance(body, dict) else None
    total = body.get("totalDocs") if isinstance(body, dict) else None
    if not isinstance(docs, list) or not isinstance(total, int) or isinstance(total, bool):
        raise ProviderUnavailable(
            f"GET {TASKS}: expected a page {{docs, totalDocs, …}}, got {type(body).__name__}",
            provider=NAME,
            status_code=response.status_code,
        )
    assert isinstance(body, dict)
    following = body.get("nextPage")
    has_next = body.get("hasNextPage") is True and isinstance(following, int)
    return Page(
        docs=[doc for doc in docs if isinstance(doc, dict)],
        total=max(0, total),
        next_page=following if has_next and not isinstance(following, bool) else None,
    )


def encode(document: Any) -> bytes:
    """How a document is archived: indented UTF-8 JSON in the platform's key order."""
    return json.dumps(document, ensure_ascii=False, indent=2).encode() + b"\n"


def _query(
    project: str,
    page: int,
    limit: int,
    subject: tuple[str, str],
    statuses: Sequence[str] = (),
    fields: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """The list's query string, repeated keys as the SDK (requests) sends them."""
    query = [("pagination", "true"), ("page", str(page)), ("limit", str(limit))]
    query += [("projectId", project), subject]
    query += [("statuses", word) for word in statuses]
    query += [("optionalFields", field) for field in fields]
    return query


class _PageCache:
    """Full documents of the batch pages being archived, each kept until it is taken once.

    At most ``max_pages`` pages, each for ``ttl`` seconds: an archive that failed halfway
    leaves a page behind, which must neither pile up nor be served stale to its retry.
    """

    def __init__(
        self, max_pages: int = 4, ttl: float = 120.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pages: OrderedDict[Any, tuple[float, dict[str, dict[str, Any]]]] = OrderedDict()
        self._max, self._ttl, self._clock = max_pages, ttl, clock

    def put(self, key: Any, docs: Sequence[dict[str, Any]]) -> None:
        by_id = {doc["_id"]: doc for doc in docs if isinstance(doc.get("_id"), str)}
        self._pages[key] = (self._clock(), by_id)
        self._pages.move_to_end(key)
        while len(self._pages) > self._max:
            self._pages.popitem(last=False)

    def take(self, key: Any, task_id: str) -> dict[str, Any] | None:
        entry = self._pages.get(key)
        if entry is None:
            return None
        stored, docs = entry
        if self._clock() - stored > self._ttl:
            del self._pages[key]
            return None
        doc = docs.pop(task_id, None)
        if not docs:
            del self._pages[key]
        return doc


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
