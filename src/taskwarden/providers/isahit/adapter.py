"""The isahit lab adapter: watch one annotation task, or a whole batch, through the task list.

isahit has no per-task endpoint: the SDK (``isahitlab`` on PyPI, ``TaskActions.tasks``) reads
everything from the paged list, relative to ``settings.providers.isahit.base_url``
(``https://hub-api.isahit.com/``)::

    GET api/task-manager/tasks?pagination=true&page=N&limit=100&projectId=P
        &batchIds=…&statuses=…&taskIds=…&optionalFields=data&optionalFields=jobs…
        → {docs, totalDocs, limit, totalPages, page, pagingCounter, hasPrevPage, hasNextPage,
           prevPage, nextPage}
    GET api/task-manager/batches/{id}      to tell an unknown batch from an empty one, and
                                           the batch's times once it ends

What a registration may ask: :mod:`.params`. One status check of a task is one request
(``taskIds``, ``limit=1``); of a batch, two counts whatever its size (``limit=1``: every task,
then those ``complete`` or ``reviewed``). A batch is not final merely because the tasks it has
so far are: the SDK creates tasks one request at a time (``create_tasks``), so more may come.
It ends when it holds ``expected_tasks`` tasks, all final, or when its count has stayed the same
and all final for ``settle_seconds`` as seen by this worker process (raw status ``N/N final,
settling`` meanwhile). isahit has no failure or cancellation, and can reopen a final task: a
watch stops at the first final word and says so (:data:`REOPENABLE`).

Archive: a task is ``task.json``; a batch is ``batch.json`` (a summary: every task's id, name,
status) and ``task-<id>.json`` per task, every task the batch holds when it is archived. The
batch's tasks are listed from light pages (no optional fields); their full documents are
fetched when the archive opens them, a page of 100 at a time and held only until each is taken
(:class:`~.pages.PageCache`): memory stays at one page of full documents and a short line per
task, and the requests at two per hundred tasks.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from taskwarden import net
from taskwarden.config import IsahitSettings, Settings
from taskwarden.errors import ProviderUnavailable, RemoteNotFound, RequestRejected, TaskwardenError
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.providers.isahit.client import IsahitApi
from taskwarden.providers.isahit.pages import TASKS, Page, PageCache, encode, parse_page, query
from taskwarden.providers.isahit.params import Watched, request_fields, shaped, watched
from taskwarden.providers.timestamps import epoch_seconds

NAME = "isahit"
STATES = {
    "pending": Remote.PENDING,
    "configuring": Remote.PENDING,
    "to-review": Remote.RUNNING,
    "complete": Remote.SUCCEEDED,
    "reviewed": Remote.SUCCEEDED,
}
FINAL_WORDS = ("complete", "reviewed")
PAGE_SIZE = 100  # the SDK's page
MAX_SETTLING = 10_000  # batches this process remembers settling
REOPENABLE = (
    "isahit lab may reopen a complete or reviewed task (redo, or send back to review): the watch"
    " stopped at the first final word it saw and archives the task as it is then"
)
JSON = "application/json"
_PageCache = PageCache  # the name the tests knew
__all__ = ["IsahitProvider", "build", "parse_page", "validate"]


def build(settings: Settings, client: httpx.AsyncClient) -> IsahitProvider:
    """The isahit lab adapter for this process, sharing its HTTP client."""
    return IsahitProvider(settings.providers.isahit, client)


def validate(settings: Settings, target: Target) -> None:
    """Refuse (RequestRejected) unknown params, a bad kind or field, or a missing project."""
    watched(target, settings.providers.isahit.project_id)


class IsahitProvider:
    """A :class:`~taskwarden.providers.base.Provider` (and
    :class:`~taskwarden.providers.base.Diagnoses`) for isahit lab tasks and batches.

    ``clock`` (monotonic seconds) times how long a batch has been settled; tests set it.
    """

    name = NAME

    def __init__(self, settings: IsahitSettings, client: httpx.AsyncClient) -> None:
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        self._api = IsahitApi(client, settings.base_url, settings.access_id, secret)
        self._default_project = settings.project_id
        self._settle = settings.batch_settle_seconds
        self._pages = PageCache()
        self.clock: Callable[[], float] = time.monotonic
        self._settling: dict[tuple[str, str], tuple[int, float]] = {}  # → (count, all final since)

    async def fetch_status(self, target: Target) -> Observation:
        """One status check: the task's word, or how many of the batch's tasks are final."""
        what = watched(target, self._default_project)
        if what.kind == "batch":
            return await self._batch_status(what)
        return task_observation(await self._task(what, ()))

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """``task.json``; or ``batch.json`` then ``task-<id>.json`` for each task of the batch."""
        what = watched(target, self._default_project)
        if what.kind == "batch":
            return await self._batch_outputs(what)
        doc = await self._task(what, what.fields)
        source = f"{NAME}:{TASKS}?taskIds={what.remote_id}"
        return [OutputRef("task.json", source, encode(doc), JSON)]

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        """What a watch that did not succeed (isahit tasks only time out: they never fail) leaves:
        the same task documents as a success, as they are at that moment."""
        return await self.list_outputs(target)

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
        key = (what.project_id, what.remote_id)
        total = (await self._page(what, 1, limit=1)).total
        if total == 0:
            self._settling.pop(key, None)
            await self._batch(what)  # an unknown batch is a 404; a known empty one is pending
            return Observation(Remote.PENDING, "0/0 final", message="the batch has no tasks yet")
        final = min(total, (await self._page(what, 1, limit=1, statuses=FINAL_WORDS)).total)
        raw = f"{final}/{total} final"
        details: dict[str, Any] = {"tasks": total, "final": final}
        if final < total:
            self._settling.pop(key, None)
            remote = Remote.RUNNING if final else Remote.PENDING
            return Observation(remote, raw, progress=final / total, details=details)
        settle = self._settle if what.settle_seconds is None else what.settle_seconds
        waited = self._stable_for(key, total)
        if (what.expected_tasks is None or total < what.expected_tasks) and waited < settle:
            message = (
                f"all {total} tasks are final; the batch ends once it has stayed so for"
                f" {settle:g} s (the SDK adds tasks one at a time) or holds params.expected_tasks"
            )
            details["settling_for"] = round(waited, 3)
            return Observation(Remote.RUNNING, f"{raw}, settling", 1.0, message, details=details)
        self._settling.pop(key, None)
        created, updated = await self._batch_times(what)
        return Observation(
            Remote.SUCCEEDED, raw, 1.0, REOPENABLE,
            remote_created_at=created, remote_ended_at=updated, details=details,
        )  # fmt: skip

    def _stable_for(self, key: tuple[str, str], total: int) -> float:
        """Seconds this process has seen the batch hold ``total`` tasks, all final."""
        now = self.clock()
        count, since = self._settling.get(key, (total, now))
        if count != total:  # tasks were added (or removed): the wait starts again
            since = now
        if key not in self._settling and len(self._settling) >= MAX_SETTLING:
            self._settling.clear()
        self._settling[key] = (total, since)
        return now - since

    async def _batch(self, what: Watched) -> dict[str, Any]:
        batch = quote(what.remote_id, safe="")
        response = await self._api.get(
            f"api/task-manager/batches/{batch}", (), what=f"isahit batch {what.remote_id}"
        )
        body = net.json_body(response, provider=NAME)
        return body if isinstance(body, dict) else {}

    async def _batch_times(self, what: Watched) -> tuple[float | None, float | None]:
        # decoration: the watch ends whether or not the batch document says when
        try:
            batch = await self._batch(what)
        except TaskwardenError:
            return None, None
        return epoch_seconds(batch.get("createdAt")), epoch_seconds(batch.get("updatedAt"))

    async def _task(self, what: Watched, fields: Sequence[str]) -> dict[str, Any]:
        """The task's document; one the list does not return is :class:`RemoteNotFound`."""
        sent = request_fields(fields)
        page = await self._get(
            query(what.project_id, 1, 1, ("taskIds", what.remote_id), fields=sent),
            f"isahit task {what.remote_id}",
        )
        for doc in page.docs:
            if doc.get("_id") == what.remote_id:
                return shaped(doc, fields)
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
                        f"task-{task_id}.json", f"{NAME}:{TASKS}?taskIds={task_id}",
                        content_type=JSON, key=f"{number}:{task_id}",
                    )
                )  # fmt: skip
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
            "expected_tasks": what.expected_tasks,
            "tasks": entries,
        }
        source = f"{NAME}:{TASKS}?batchIds={what.remote_id}"
        return [OutputRef("batch.json", source, encode(summary), JSON), *refs]

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
            fields = request_fields(what.fields)
            page = await self._page(what, number, limit=PAGE_SIZE, fields=fields)
            self._pages.put(key, page.docs)
            doc = self._pages.take(key, task_id)
        if doc is None:  # the list has moved since it was walked: ask for the task alone
            return await self._task(
                Watched("task", task_id, what.project_id, what.fields), what.fields
            )
        return shaped(doc, what.fields)

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
        subject = ("batchIds", what.remote_id)
        found = query(what.project_id, number, limit, subject, statuses, fields)
        return await self._get(found, f"isahit batch {what.remote_id}")

    async def _get(self, found: list[tuple[str, str]], what: str) -> Page:
        return parse_page(await self._api.get(TASKS, found, what=what))


def task_observation(doc: dict[str, Any]) -> Observation:
    """What a task's list document says: its word, name, times and review score."""
    raw = doc.get("status")
    word = raw if isinstance(raw, str) else json.dumps(raw)
    remote = STATES.get(word, Remote.UNKNOWN)
    name = doc.get("name") if isinstance(doc.get("name"), str) else None
    final = remote is Remote.SUCCEEDED
    properties = doc.get("properties")
    score = properties.get("score") if isinstance(properties, dict) else None
    numeric = isinstance(score, int | float) and not isinstance(score, bool)
    return Observation(
        remote=remote,
        raw_status=word,
        message=REOPENABLE if final else None,
        name=name,
        remote_created_at=epoch_seconds(doc.get("createdAt")),
        # updatedAt: when it last changed, which for a final task is when it turned final
        remote_ended_at=epoch_seconds(doc.get("updatedAt")) if final else None,
        details={"score": score} if numeric else None,
    )


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
