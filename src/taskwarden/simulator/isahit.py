"""The isahit lab simulator: annotation tasks behind isahit's own paths, pages, auth and errors.

Served under ``/isahit/`` (so the SDK's ``endpoint`` is ``http://127.0.0.1:<port>/isahit/``):

    POST  api/user-manager/auth/login          form access_id, secret_key → 201 {access_token,
                                               expires_in}
    GET   api/task-manager/tasks               the paged task list (below)
    PATCH api/task-manager/tasks/{id}/reset    redo: a final task goes back to pending
    PATCH api/task-manager/tasks/{id}/to-review  a final task goes back to to-review
    …and the batch, project and task-creation routes of :mod:`.isahit_create`

The task list takes ``projectId`` (required), ``pagination`` (default true), ``page``, ``limit``
(default 10) and the filters the SDK sends, each repeatable: ``batchIds``, ``statuses``,
``taskIds``, ``taskNames``, ``nameLike`` (a regular expression), ``optionalFields`` (``data``,
``jobs``, ``metrics``, ``data.mask``, ``jobs.history``; ``lastAnnotator`` accepted, ignored),
``createdAt`` and ``updatedAt`` with an operator prefix (``>2022-09-19 08:30:00``, ``>=…``,
``<…``, ``<=…``, UTC), and ``properties.<k>``.
Pages are mongoose-paginate-v2's envelope: ``{docs, totalDocs, limit, totalPages, page,
pagingCounter, hasPrevPage, hasNextPage, prevPage, nextPage}``.

Errors are NestJS bodies, ``{"statusCode", "message", "error"}``, plus a numeric ``errorCode`` on
a 400. A list request is counted as (and faults can target) the task it names, when it names
exactly one in ``taskIds``, else the batch, when it names exactly one in ``batchIds``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from taskwarden.simulator.faults import FAULT_SCOPE_KEY, Endpoint, FaultBook, Stats
from taskwarden.simulator.isahit_create import Creation, error
from taskwarden.simulator.isahit_query import BAD_QUERY, QueryError, TaskQuery
from taskwarden.simulator.isahit_tasks import (
    DEFAULT_PROJECT,
    FINAL_WORDS,
    IsahitTask,
    IsahitTaskSpec,
    Reopened,
    object_id,
)

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

NAME = "isahit"
PREFIX = "/isahit"
LOGIN = "api/user-manager/auth/login"
TASKS = "api/task-manager/tasks"
NO_CREDENTIALS = 1001  # errorCode of a login without credentials (the simulator's numbering)
_SPECS = TypeAdapter(list[IsahitTaskSpec])


class IsahitAuth(BaseModel):
    """Who may log in (access id → secret key), the ``expires_in`` (simulation seconds) of
    the tokens the login hands out, and the script of tasks created through the API."""

    model_config = ConfigDict(extra="forbid")

    auth_required: bool = True
    credentials: dict[str, str] = {"sim-access-id": "sim-secret-key"}
    token_ttl: float = Field(3600.0, gt=0)
    api_pending_seconds: float = Field(0.5, ge=0)
    api_running_seconds: float = Field(1.0, ge=0)
    api_final_status: Literal["complete", "reviewed"] = "complete"


@dataclass(frozen=True)
class IsahitBatch:
    """A batch of simulated tasks, as :meth:`IsahitSimulator.add_batch` made it."""

    batch_id: str
    project_id: str
    tasks: list[IsahitTask]


class IsahitSimulator:
    """isahit's state: scripted tasks (batches are the tasks sharing a ``batch_id``), hand
    reopenings, issued tokens, and who may log in (``auth``)."""

    name = NAME
    prefix = PREFIX

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.tasks: dict[str, IsahitTask] = {}
        self.batches: dict[str, str] = {}  # batch id → its project, empty batches included
        self.reopened: dict[str, Reopened] = {}
        self.auth = IsahitAuth()
        self.issued: dict[str, float] = {}  # token → expiry (simulation time)
        self.refused = 0  # requests answered 401 for a missing, unknown or expired token
        self.creation = Creation(self)

    # -- scripting ---------------------------------------------------------------------------
    def add_task(self, spec: IsahitTaskSpec | None = None, **fields: Any) -> IsahitTask:
        """Add one scripted task, from a spec or from its fields; its clock starts now."""
        return self.add_tasks([spec if spec is not None else IsahitTaskSpec(**fields)])[0]

    def add_tasks(self, specs: Iterable[IsahitTaskSpec | Mapping[str, Any]]) -> list[IsahitTask]:
        """Add many scripted tasks at once (all validated before any is added)."""
        items = [s if isinstance(s, IsahitTaskSpec) else IsahitTaskSpec(**s) for s in specs]
        now = self.clock.now()
        epoch = self.clock.epoch(now)
        added = [IsahitTask(spec, spec.seed or spec.task_id, now, epoch) for spec in items]
        for task in added:
            self.tasks[task.task_id] = task
            self.batches.setdefault(task.script.batch_id, task.script.project_id)
        return added

    def add_batch(
        self,
        count: int,
        *,
        batch_id: str | None = None,
        project_id: str = DEFAULT_PROJECT,
        stagger: float = 0.0,
        **fields: Any,
    ) -> IsahitBatch:
        """Add ``count`` tasks (none: an empty batch) in one batch, named ``image-0001.jpg``…;
        task ``i`` runs ``i * stagger`` seconds longer than the first, so the batch finishes bit
        by bit."""
        batch = batch_id or object_id()
        self.batches.setdefault(batch, project_id)
        running = float(fields.pop("running_seconds", 0.0))
        specs = [
            IsahitTaskSpec(
                name=f"image-{index + 1:04d}.jpg",
                batch_id=batch,
                project_id=project_id,
                running_seconds=running + index * stagger,
                **fields,
            )
            for index in range(count)
        ]
        return IsahitBatch(batch, project_id, self.add_tasks(specs))

    def task(self, task_id: str) -> IsahitTask:
        return self.tasks[task_id]

    def status(self, task_id: str) -> str:
        """The status word the task shows now."""
        return self.tasks[task_id].status(self.clock.now(), self.reopened.get(task_id))[0]

    def document(self, task_id: str, fields: Iterable[str] = ()) -> dict[str, Any]:
        """The task's document now, with the optional fields named."""
        task = self.tasks[task_id]
        return task.document(self.clock.now(), frozenset(fields), self.reopened.get(task_id))

    def archive_sha256(self, task_id: str, fields: Iterable[str]) -> str:
        """SHA-256 of the task's document now, as taskwarden archives it."""
        task = self.tasks[task_id]
        return task.archive_sha256(self.clock.now(), frozenset(fields), self.reopened.get(task_id))

    def reopen(self, task_id: str, to: str = "pending") -> bool:
        """Send a final task back to ``to`` (``pending``: redo; ``to-review``) for its script's
        ``reopen_seconds``; False (and nothing changes) when the task is not final."""
        if self.status(task_id) not in FINAL_WORDS:
            return False
        self.reopened[task_id] = Reopened(self.clock.now(), to)
        return True

    def expire_tokens(self) -> int:
        """Expire every token issued so far, as a server restart would; returns how many."""
        now = self.clock.now()
        live = [token for token, expiry in self.issued.items() if expiry > now]
        for token in live:
            self.issued[token] = now
        return len(live)

    def projects(self) -> set[str]:
        return {DEFAULT_PROJECT} | set(self.batches.values())

    # -- the control API ---------------------------------------------------------------------
    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add tasks from JSON specs (the control API); raises ``ValidationError``."""
        tasks = self.add_tasks(_SPECS.validate_python(items))
        return [{"task_id": t.task_id, "batch_id": t.script.batch_id} for t in tasks]

    def describe(self, task_id: str) -> dict[str, Any] | None:
        """A task's script, its full document now, and that document's archive checksum."""
        if task_id not in self.tasks:
            return None
        every = ("data", "jobs", "metrics")
        return {
            "spec": self.tasks[task_id].script.model_dump(),
            "document": self.document(task_id, every),
            "archive_sha256": self.archive_sha256(task_id, every),
        }

    def clear(self) -> None:
        """Forget every task, batch, reopening and issued token."""
        self.tasks, self.batches, self.reopened, self.issued = {}, {}, {}, {}
        self.refused = 0
        self.creation.clear()

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change some of the :class:`IsahitAuth` settings; raises ``ValidationError``."""
        self.auth = IsahitAuth.model_validate({**self.auth.model_dump(), **settings})
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return self.auth.model_dump()

    # -- HTTP --------------------------------------------------------------------------------
    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The platform's API routes, counted and fault-injectable, relative to ``prefix``."""

        def route(method: str, path: str, handler: Any, task: str | None = None) -> Route:
            task_of = (lambda params: params.get(task)) if task else (lambda params: None)
            app = Endpoint(
                NAME, method, path, handler, faults, stats, error_response, task_of=task_of
            )
            return Route("/" + path, app, methods=[method])

        listing = Endpoint(
            NAME, "GET", TASKS, self._list, faults, stats, error_response,
            task_of=lambda params: params.get("subject"), kinds=frozenset({"unknown_status"}),
        )  # fmt: skip
        made, batch = self.creation, "api/task-manager/batches"
        return [
            route("POST", LOGIN, self._login),
            Route("/" + TASKS, _SubjectFromQuery(listing), methods=["GET"]),
            route("PATCH", f"{TASKS}/{{task_id}}/reset", self._reset, "task_id"),
            route("PATCH", f"{TASKS}/{{task_id}}/to-review", self._to_review, "task_id"),
            route("GET", batch, made.list_batches),
            route("POST", batch, made.create_batch),
            route("GET", f"{batch}/{{batch_id}}", made.batch, "batch_id"),
            route("PATCH", f"{batch}/{{batch_id}}/tasks-duplicate", made.duplicates, "batch_id"),
            route("POST", f"{batch}/{{batch_id}}/tasks", made.create_task, "batch_id"),
            route("GET", "api/project-manager/projects", made.projects),
            route(
                "GET",
                "api/project-configuration-manager/projects/{project_id}/project-configuration",
                made.configuration,
            ),
            route("POST", "api/data-manager/import-data/json", made.import_data),
            route("POST", "api/file-manager/files", made.upload),
            route("POST", "api/file-manager/grant/files", made.grant_files),
        ]

    def denied(self, request: Request) -> Response | None:
        if not self.auth.auth_required:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        expiry = self.issued.get(token or "")
        if expiry is not None and expiry > self.clock.now():
            return None
        self.refused += 1
        return error(401, "Unauthorized")

    async def _login(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        access_id, secret_key = form.get("access_id"), form.get("secret_key")
        if not access_id or not secret_key:
            return error(400, "access_id and secret_key are required", NO_CREDENTIALS)
        if self.auth.credentials.get(access_id) != secret_key:
            return error(401, "Unauthorized")
        token = "sim-" + secrets.token_urlsafe(24)
        ttl = self.auth.token_ttl
        self.issued[token] = self.clock.now() + ttl
        # a whole number, as a JWT library's expiresIn is, unless the test asked for less
        expires_in: float = int(ttl) if ttl >= 1 and ttl == int(ttl) else ttl
        return JSONResponse({"access_token": token, "expires_in": expires_in}, 201)

    async def _list(self, request: Request) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        try:
            query = TaskQuery.parse(request.query_params)
        except QueryError as exc:
            return error(400, exc.message, exc.code)
        if query.project not in self.projects():
            return error(403, "Forbidden resource")
        now = self.clock.now()
        found = [
            task
            for task in list(self.tasks.values())
            if query.matches(task, task.status(now, self.reopened.get(task.task_id)))
        ]
        fault = request.scope.get(FAULT_SCOPE_KEY)
        word = fault.word if fault is not None and fault.kind == "unknown_status" else None
        shown, envelope = query.paginate(found)
        docs = [
            task.document(now, query.fields, self.reopened.get(task.task_id), word)
            for task in shown
        ]
        return JSONResponse({"docs": docs, **envelope})

    async def _reset(self, request: Request) -> Response:
        return self._send_back(request, "pending")

    async def _to_review(self, request: Request) -> Response:
        return self._send_back(request, "to-review")

    def _send_back(self, request: Request, word: str) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        task_id = request.path_params["task_id"]
        if task_id not in self.tasks:
            return error(404, "Task not found")
        self.reopen(task_id, word)
        return JSONResponse(self.document(task_id))


class _SubjectFromQuery:
    """Names the task (one ``taskIds``) or batch (one ``batchIds``) a list request is about, as
    a path parameter, so per-task counters and faults work on the list route too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        ids = [v for k, v in pairs if k == "taskIds"]
        batches = [v for k, v in pairs if k == "batchIds"]
        subject = ids[0] if len(ids) == 1 else batches[0] if len(batches) == 1 else None
        scope["path_params"] = {**scope.get("path_params", {}), "subject": subject}
        await self.app(scope, receive, send)


def error_response(status: int, message: str) -> Response:
    """The body of an injected fault, in the platform's shape."""
    if status == 429:
        return error(429, "ThrottlerException: Too Many Requests")
    return error(status, message, BAD_QUERY if status == 400 else None)
