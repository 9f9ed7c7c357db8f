"""The Geobox simulator: scripted tasks behind Geobox's own paths, JSON, auth and error bodies.

Served under ``/geobox/v1/`` (so an SDK's ``host`` is ``http://127.0.0.1:<port>/geobox/``):

    POST auth/token/                  form username, password → {"access_token", "token_type"}
    GET  tasks/                       list (state, search, skip, limit=10, return_count)
    GET  tasks/{uuid}/                the task document
    GET  tasks/{uuid}/status/         {"current", "total"}
    POST tasks/{uuid}/abort/          abort (a no-op on a finished task)
    GET  files/{uuid}/info/           file metadata      GET files/{uuid}/download/  the bytes
    GET  vectorLayers/{uuid}/, rasters/{uuid}/, 3dmodels/{uuid}/, 3dtiles/{uuid}/, tables/{uuid}/

A task's life is a script (:class:`GeoboxTaskSpec`) played against the simulation clock from the
moment it is added: ``pending_seconds`` in PENDING, ``running_seconds`` in PROGRESS with
``current`` rising linearly to ``progress_total``, then its ``outcome``. Outputs exist once the
task has succeeded. Errors are ``{"detail": ...}`` like the FastAPI service the SDK talks to.
Auth (``Authorization: Bearer`` or ``?apikey=``) is checked unless ``auth_required`` is off.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from taskwarden.simulator.faults import FAULT_SCOPE_KEY, FaultBook, Stats, route_maker
from taskwarden.simulator.script import Phase, Script, ScriptedTask

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

NAME = "geobox"
PREFIX = "/geobox/v1"
WORDS: dict[Phase, str] = {
    "pending": "PENDING",
    "running": "PROGRESS",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "ABORTED",
}
AssetKind = Literal["layer", "raster", "model", "3dtiles", "table"]
ASSET_PATHS = {"layer": "vectorLayers", "raster": "rasters", "model": "3dmodels"}
ASSET_PATHS |= {"3dtiles": "3dtiles", "table": "tables"}
FILE_TYPES = {".zip": "Compressed", ".tgz": "Compressed", ".gz": "Compressed", ".tif": "GeoTIFF"}
FILE_TYPES |= {".tiff": "GeoTIFF", ".geojson": "GeoJSON", ".csv": "CSV", ".gpkg": "GPKG"}
FILE_TYPES |= {".glb": "GLB", ".xlsx": "XLSX", ".png": "Image", ".jpg": "Image"}


class GeoboxTaskSpec(Script):
    """The script of one simulated Geobox task (timing, outcome and file fields: :class:`Script`).

    ``success_asset`` publishes an ``asset_kind``; ``failure`` reports ``failure_msg`` and
    ``failure_type`` in ``result.detail``, or ``failure_errors`` as ``result.errors`` when set.
    ``output_uuid`` is the file's or asset's id.
    """

    uuid: str = Field(default_factory=lambda: str(uuid4()))
    name: str = "simulated task"
    asset_kind: AssetKind = "layer"
    failure_msg: str = "simulated failure"
    failure_type: str = "geobox.SimulatedError"
    failure_errors: list[Any] | None = None
    output_uuid: str = Field(default_factory=lambda: str(uuid4()))

    @field_validator("uuid", "output_uuid")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        if not value or "/" in value or "?" in value or "#" in value or len(value) > 256:
            raise ValueError("must be 1-256 characters without '/', '?' or '#'")
        return value


_SPECS = TypeAdapter(list[GeoboxTaskSpec])


class GeoboxTask(ScriptedTask[GeoboxTaskSpec]):
    """A Geobox task as it plays (``script`` is its :class:`GeoboxTaskSpec`)."""

    __slots__ = ()

    @property
    def uuid(self) -> str:
        return self.script.uuid

    @property
    def output_uuid(self) -> str:
        return self.script.output_uuid

    def output_kind(self) -> str:
        return "file" if self.script.outcome == "success_file" else self.script.asset_kind

    def document(self, now: float, word: str | None = None) -> dict[str, Any]:
        """The task as ``GET tasks/{uuid}/`` shows it (``word`` overrides the state word)."""
        script = self.script
        phase, _ = self.phase(now)
        result: dict[str, Any] = {}
        if phase == "succeeded":
            result = {f"{self.output_kind()}_uuid": script.output_uuid}
        elif phase == "failed" and script.failure_errors is not None:
            result = {"errors": script.failure_errors}
        elif phase == "failed":
            result = {"detail": {"msg": script.failure_msg, "type": script.failure_type}}
        started, ended = self.started(now), self.ended(now)
        return {
            "uuid": script.uuid,
            "name": script.name,
            "state": word or WORDS[phase],
            "accepted_at": _iso(self.epoch),
            "started_at": None if started is None else _iso(started),
            "finished_at": None if ended is None else _iso(ended),
            "result": result,
        }


class GeoboxAuth(BaseModel):
    """Who may call: fixed tokens and API keys, password users, and the lifetime (simulation
    seconds; None: forever) of tokens that ``auth/token/`` issues."""

    model_config = ConfigDict(extra="forbid")

    auth_required: bool = True
    tokens: list[str] = ["sim-token"]
    apikeys: list[str] = ["sim-apikey"]
    users: dict[str, str] = {"sim-user": "sim-password"}
    token_ttl: float | None = Field(None, gt=0)


class GeoboxSimulator:
    """Geobox's state: scripted tasks, their outputs, and who may call (``auth``)."""

    name = NAME
    prefix = PREFIX

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.tasks: dict[str, GeoboxTask] = {}
        self.outputs: dict[str, GeoboxTask] = {}  # output uuid → its task
        self.auth = GeoboxAuth()
        self.issued: dict[str, float | None] = {}  # token from auth/token/ → expiry (sim time)

    def add_task(self, spec: GeoboxTaskSpec | None = None, **fields: Any) -> GeoboxTask:
        """Add one scripted task, from a spec or from its fields; its clock starts now."""
        return self.add_tasks([spec if spec is not None else GeoboxTaskSpec(**fields)])[0]

    def add_tasks(self, specs: Iterable[GeoboxTaskSpec | Mapping[str, Any]]) -> list[GeoboxTask]:
        """Add many scripted tasks at once (all validated before any is added)."""
        items = [s if isinstance(s, GeoboxTaskSpec) else GeoboxTaskSpec(**s) for s in specs]
        now = self.clock.now()
        epoch = self.clock.epoch(now)
        added = [GeoboxTask(spec, spec.seed or spec.uuid, now, epoch) for spec in items]
        for task in added:
            self.tasks[task.uuid] = task
            self.outputs[task.output_uuid] = task
        return added

    def task(self, uuid: str) -> GeoboxTask:
        return self.tasks[uuid]

    def state(self, uuid: str) -> str:
        """The state word the task shows now."""
        return WORDS[self.tasks[uuid].phase(self.clock.now())[0]]

    def abort(self, uuid: str) -> bool:
        """Abort a task that has not finished; False when it had already."""
        return self.tasks[uuid].abort(self.clock.now())

    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add tasks from JSON specs (the control API); raises ``ValidationError``."""
        tasks = self.add_tasks(_SPECS.validate_python(items))
        return [{"uuid": t.uuid, "output_uuid": t.output_uuid} for t in tasks]

    def describe(self, uuid: str) -> dict[str, Any] | None:
        """A task's script, what it shows now, and its file's checksum (the control API)."""
        task = self.tasks.get(uuid)
        if task is None:
            return None
        return {
            "spec": task.script.model_dump(),
            "document": task.document(self.clock.now()),
            "sha256": task.sha256 if task.output_kind() == "file" else None,
        }

    def clear(self) -> None:
        """Forget every task."""
        self.tasks = {}
        self.outputs = {}

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change some of the :class:`GeoboxAuth` settings; raises ``ValidationError``."""
        self.auth = GeoboxAuth.model_validate({**self.auth.model_dump(), **settings})
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return self.auth.model_dump()

    # -- HTTP ------------------------------------------------------------------------------
    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The platform's API routes, counted and fault-injectable, relative to ``prefix``."""

        route = route_maker(NAME, faults, stats, error)

        task_of = _task_param
        status_kinds = frozenset({"unknown_status"})
        routes: list[BaseRoute] = [
            route("POST", "auth/token/", self._token),
            route("GET", "tasks/", self._list, kinds=status_kinds),
            route("GET", "tasks/{uuid}/", self._get, task_of=task_of, kinds=status_kinds),
            route("GET", "tasks/{uuid}/status/", self._progress, task_of=task_of),
            route("POST", "tasks/{uuid}/abort/", self._abort, task_of=task_of),
            route("GET", "files/{uuid}/info/", self._file_info, task_of=self._owner),
            route("GET", "files/{uuid}/download/", self._download, task_of=self._owner, json=False),
        ]
        for kind, collection in ASSET_PATHS.items():
            routes.append(
                route("GET", f"{collection}/{{uuid}}/", self._asset(kind), task_of=self._owner)
            )
        return routes

    def _owner(self, params: Mapping[str, Any]) -> str | None:
        task = self.outputs.get(params.get("uuid", ""))
        return task.uuid if task is not None else None

    def _denied(self, request: Request) -> Response | None:
        auth = self.auth
        if not auth.auth_required:
            return None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
            if token in auth.tokens:
                return None
            if token in self.issued:
                expiry = self.issued[token]
                if expiry is None or expiry > self.clock.now():
                    return None
                return error(401, "Token has expired")
            return error(401, "Could not validate credentials")
        apikey = request.query_params.get("apikey")
        if apikey is not None:
            return None if apikey in auth.apikeys else error(401, "Invalid API key")
        return error(401, "Not authenticated")

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        missing = [field for field in ("username", "password") if not form.get(field)]
        if missing:
            return error(
                422, [_unprocessable(["body", field], "Field required") for field in missing]
            )
        if self.auth.users.get(form["username"]) != form["password"]:
            return error(401, "Incorrect username or password")
        token = "sim-" + secrets.token_urlsafe(16)
        ttl = self.auth.token_ttl
        self.issued[token] = None if ttl is None else self.clock.now() + ttl
        return JSONResponse({"access_token": token, "token_type": "bearer"})

    async def _list(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        query = request.query_params
        try:
            skip = int(query.get("skip") or 0)
            limit = int(query.get("limit") or 10)
        except ValueError:
            return error(422, [_unprocessable(["query", "skip"], "must be an integer")])
        now = self.clock.now()
        wanted, search = query.get("state"), (query.get("search") or "").lower()
        found = [
            task
            for task in list(self.tasks.values())
            if (not wanted or WORDS[task.phase(now)[0]] == wanted)
            and (not search or search in task.script.name.lower())
        ]
        if (query.get("return_count") or "").lower() in ("true", "1"):
            return JSONResponse({"count": len(found)})
        word = _word(request)
        return JSONResponse([task.document(now, word) for task in found[skip : skip + limit]])

    async def _get(self, request: Request) -> Response:
        task = self._lookup(request)
        if isinstance(task, Response):
            return task
        return JSONResponse(task.document(self.clock.now(), _word(request)))

    async def _progress(self, request: Request) -> Response:
        task = self._lookup(request)
        if isinstance(task, Response):
            return task
        _, current = task.phase(self.clock.now())
        return JSONResponse({"current": current, "total": task.script.progress_total})

    async def _abort(self, request: Request) -> Response:
        task = self._lookup(request)
        if isinstance(task, Response):
            return task
        self.abort(task.uuid)
        return JSONResponse(task.document(self.clock.now()))

    def _lookup(self, request: Request) -> GeoboxTask | Response:
        """The task the path names, or the response refusing it."""
        if (denied := self._denied(request)) is not None:
            return denied
        task = self.tasks.get(request.path_params["uuid"])
        return task if task is not None else error(404, "Task not found")

    def _output(self, request: Request, kind: str) -> GeoboxTask | Response:
        """The succeeded task whose ``kind`` output the path names, or the refusal."""
        if (denied := self._denied(request)) is not None:
            return denied
        task = self.outputs.get(request.path_params["uuid"])
        if task is None or task.output_kind() != kind:
            return error(404, f"{kind.capitalize()} not found")
        if task.phase(self.clock.now())[0] != "succeeded":
            return error(404, f"{kind.capitalize()} not found")
        return task

    async def _file_info(self, request: Request) -> Response:
        task = self._output(request, "file")
        if isinstance(task, Response):
            return task
        script = task.script
        extension = "." + script.file_name.rsplit(".", 1)[-1] if "." in script.file_name else ""
        return JSONResponse(
            {
                "uuid": script.output_uuid,
                "name": script.file_name,
                "extension": extension,
                "file_type": FILE_TYPES.get(extension.lower(), "Document"),
                "size": script.file_size,
                "created_at": _iso(task.ended(self.clock.now()) or task.epoch),
                "layers": {"layers": []},
            }
        )

    async def _download(self, request: Request) -> Response:
        task = self._output(request, "file")
        if isinstance(task, Response):
            return task
        return task.download()

    def _asset(self, kind: str) -> Any:
        async def describe(request: Request) -> Response:
            task = self._output(request, kind)
            if isinstance(task, Response):
                return task
            body: dict[str, Any] = {
                "uuid": task.output_uuid,
                "name": f"{task.script.name} {kind}",
                "created_at": _iso(task.ended(self.clock.now()) or task.epoch),
                "task_uuid": task.uuid,
            }
            if kind == "layer":
                body["layer_type"] = "Polygon"
            return JSONResponse(body)

        return describe


def error(status: int, detail: Any) -> Response:
    """A Geobox error response: ``{"detail": ...}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status, headers)


def _task_param(params: Mapping[str, Any]) -> str | None:
    value = params.get("uuid")
    return value if isinstance(value, str) else None


def _word(request: Request) -> str | None:
    fault = request.scope.get(FAULT_SCOPE_KEY)
    return fault.word if fault is not None and fault.kind == "unknown_status" else None


def _unprocessable(loc: list[str], msg: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "msg": msg}


def _iso(epoch: float) -> str:
    # naive UTC with microseconds: the first format the SDK's _parse_datetime tries
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat("T", "microseconds")
