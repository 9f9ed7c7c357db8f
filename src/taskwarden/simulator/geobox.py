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

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from taskwarden.simulator.faults import FAULT_SCOPE_KEY, Endpoint, FaultBook, Stats
from taskwarden.simulator.outputs import iter_output, output_bytes, output_sha256

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from taskwarden.simulator.app import SimClock

NAME = "geobox"
PREFIX = "/geobox/v1"
Outcome = Literal["success_file", "success_asset", "failure", "aborted", "never"]
AssetKind = Literal["layer", "raster", "model", "3dtiles", "table"]
FINAL = {"success_file": "SUCCESS", "success_asset": "SUCCESS", "failure": "FAILURE"}
ASSET_PATHS = {
    "layer": "vectorLayers",
    "raster": "rasters",
    "model": "3dmodels",
    "3dtiles": "3dtiles",
    "table": "tables",
}
FILE_TYPES = {".zip": "Compressed", ".tgz": "Compressed", ".gz": "Compressed", ".tif": "GeoTIFF"}
FILE_TYPES |= {".tiff": "GeoTIFF", ".geojson": "GeoJSON", ".csv": "CSV", ".gpkg": "GPKG"}
FILE_TYPES |= {".glb": "GLB", ".xlsx": "XLSX", ".png": "Image", ".jpg": "Image"}


class GeoboxTaskSpec(BaseModel):
    """The script of one simulated task. ``seed`` (default: the uuid) fixes its file's bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uuid: str = Field(default_factory=lambda: str(uuid4()))
    name: str = "simulated task"
    pending_seconds: float = Field(0.0, ge=0)
    running_seconds: float = Field(0.0, ge=0)
    progress_total: int = Field(100, ge=1)
    outcome: Outcome = "success_file"
    asset_kind: AssetKind = "layer"
    failure_msg: str = "simulated failure"
    failure_type: str = "geobox.SimulatedError"
    failure_errors: list[Any] | None = None  # set: the result is {"errors": ...} instead
    file_name: str = "output.bin"
    file_size: int = Field(1024, ge=0)
    content_type: str = "application/octet-stream"
    seed: str | None = None
    output_uuid: str = Field(default_factory=lambda: str(uuid4()))

    @field_validator("uuid", "output_uuid")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        if not value or "/" in value or "?" in value or "#" in value or len(value) > 256:
            raise ValueError("must be 1-256 characters without '/', '?' or '#'")
        return value


_SPECS = TypeAdapter(list[GeoboxTaskSpec])


@dataclass(slots=True)
class GeoboxTask:
    """A scripted task as it plays: its spec, when it was added, and when it was aborted."""

    spec: GeoboxTaskSpec
    created: float  # simulation seconds
    epoch: float  # wall-clock time of ``created``, for the timestamps
    aborted_at: float | None = None  # seconds after ``created``

    @property
    def uuid(self) -> str:
        return self.spec.uuid

    @property
    def seed(self) -> str:
        return self.spec.seed if self.spec.seed is not None else self.spec.uuid

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the file output (without downloading it)."""
        return output_sha256(self.seed, self.spec.file_size)

    def output_bytes(self) -> bytes:
        return output_bytes(self.seed, self.spec.file_size)

    def phase(self, now: float) -> tuple[str, int]:
        """The state word and progress ``current`` at simulation time ``now``."""
        spec = self.spec
        elapsed = now - self.created
        if self.aborted_at is not None:
            return "ABORTED", self._current(self.aborted_at)
        if elapsed < spec.pending_seconds:
            return "PENDING", 0
        if spec.outcome == "never" or elapsed < spec.pending_seconds + spec.running_seconds:
            return "PROGRESS", self._current(elapsed)
        return FINAL.get(spec.outcome, "ABORTED"), spec.progress_total

    def _current(self, elapsed: float) -> int:
        spec = self.spec
        running = elapsed - spec.pending_seconds
        if running <= 0:
            return 0
        if spec.running_seconds <= 0:
            return spec.progress_total
        return min(spec.progress_total, int(spec.progress_total * running / spec.running_seconds))

    def result(self, state: str) -> dict[str, Any]:
        spec = self.spec
        if state == "SUCCESS":
            kind = "file" if spec.outcome == "success_file" else spec.asset_kind
            return {f"{kind}_uuid": spec.output_uuid}
        if state == "FAILURE":
            if spec.failure_errors is not None:
                return {"errors": spec.failure_errors}
            return {"detail": {"msg": spec.failure_msg, "type": spec.failure_type}}
        return {}

    def document(self, now: float, word: str | None = None) -> dict[str, Any]:
        """The task as ``GET tasks/{uuid}/`` shows it (``word`` overrides the state word)."""
        spec = self.spec
        state, _ = self.phase(now)
        ended = self.aborted_at
        if ended is None and state in ("SUCCESS", "FAILURE", "ABORTED"):
            ended = spec.pending_seconds + spec.running_seconds
        started = None
        if state != "PENDING" and (ended is None or ended >= spec.pending_seconds):
            started = _iso(self.epoch + spec.pending_seconds)
        return {
            "uuid": spec.uuid,
            "name": spec.name,
            "state": word or state,
            "accepted_at": _iso(self.epoch),
            "started_at": started,
            "finished_at": None if ended is None else _iso(self.epoch + ended),
            "result": self.result(state),
        }


class GeoboxSimulator:
    """Geobox's state: scripted tasks, their outputs, and who may call."""

    name = NAME
    prefix = PREFIX

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.tasks: dict[str, GeoboxTask] = {}
        self.outputs: dict[str, GeoboxTask] = {}  # output uuid → its task
        self.auth_required = True
        self.tokens: dict[str, float | None] = {"sim-token": None}  # token → expiry (sim time)
        self.apikeys: set[str] = {"sim-apikey"}
        self.users: dict[str, str] = {"sim-user": "sim-password"}
        self.token_ttl: float | None = None  # lifetime of tokens issued by auth/token/

    # -- Python API ------------------------------------------------------------------------
    def add_task(self, spec: GeoboxTaskSpec | None = None, **fields: Any) -> GeoboxTask:
        """Add one scripted task, from a spec or from its fields; its clock starts now."""
        return self.add_tasks([spec if spec is not None else GeoboxTaskSpec(**fields)])[0]

    def add_tasks(self, specs: Iterable[GeoboxTaskSpec | Mapping[str, Any]]) -> list[GeoboxTask]:
        """Add many scripted tasks at once (validated before any is added)."""
        items = [s if isinstance(s, GeoboxTaskSpec) else GeoboxTaskSpec(**s) for s in specs]
        now = self.clock.now()
        epoch = self.clock.epoch(now)
        added = []
        for spec in items:
            task = GeoboxTask(spec, now, epoch)
            self.tasks[spec.uuid] = task
            self.outputs[spec.output_uuid] = task
            added.append(task)
        return added

    def task(self, uuid: str) -> GeoboxTask:
        return self.tasks[uuid]

    def state(self, uuid: str) -> str:
        return self.tasks[uuid].phase(self.clock.now())[0]

    def abort(self, uuid: str) -> bool:
        """Abort a task that has not finished; False when it had already."""
        task = self.tasks[uuid]
        now = self.clock.now()
        if task.phase(now)[0] in ("SUCCESS", "FAILURE", "ABORTED"):
            return False
        task.aborted_at = now - task.created
        return True

    def clear(self) -> None:
        """Forget every task."""
        self.tasks = {}
        self.outputs = {}

    def reset(self) -> None:
        self.clear()

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change auth settings: auth_required, tokens, apikeys, users, token_ttl."""
        if "auth_required" in settings:
            self.auth_required = bool(settings["auth_required"])
        if "tokens" in settings:
            self.tokens = dict.fromkeys(settings["tokens"])
        if "apikeys" in settings:
            self.apikeys = set(settings["apikeys"])
        if "users" in settings:
            self.users = dict(settings["users"])
        if "token_ttl" in settings:
            self.token_ttl = settings["token_ttl"]
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return {
            "auth_required": self.auth_required,
            "tokens": sorted(self.tokens),
            "apikeys": sorted(self.apikeys),
            "users": sorted(self.users),
            "token_ttl": self.token_ttl,
        }

    # -- HTTP ------------------------------------------------------------------------------
    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The platform's API routes, counted and fault-injectable, relative to ``prefix``."""

        def route(method: str, path: str, handler: Any, **kw: Any) -> Route:
            endpoint = Endpoint(NAME, method, path, handler, faults, stats, error, **kw)
            return Route("/" + path, endpoint, methods=[method])

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
        if not self.auth_required:
            return None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
            if token in self.tokens:
                expiry = self.tokens[token]
                if expiry is None or expiry > self.clock.now():
                    return None
                return error(401, "Token has expired")
            return error(401, "Could not validate credentials")
        apikey = request.query_params.get("apikey")
        if apikey is not None:
            return None if apikey in self.apikeys else error(401, "Invalid API key")
        return error(401, "Not authenticated")

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        missing = [field for field in ("username", "password") if not form.get(field)]
        if missing:
            return JSONResponse({"detail": [_missing(field) for field in missing]}, 422)
        if self.users.get(form["username"]) != form["password"]:
            return error(401, "Incorrect username or password")
        token = "sim-" + secrets.token_urlsafe(16)
        ttl = self.token_ttl
        self.tokens[token] = None if ttl is None else self.clock.now() + ttl
        return JSONResponse({"access_token": token, "token_type": "bearer"})

    async def _list(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        query = request.query_params
        try:
            skip = int(query.get("skip") or 0)
            limit = int(query.get("limit") or 10)
        except ValueError:
            return JSONResponse({"detail": [_invalid("skip/limit", "must be an integer")]}, 422)
        now = self.clock.now()
        wanted, search = query.get("state"), (query.get("search") or "").lower()
        word = _word(request)
        found = []
        for task in list(self.tasks.values()):
            if wanted and task.phase(now)[0] != wanted:
                continue
            if search and search not in task.spec.name.lower():
                continue
            found.append(task)
        if (query.get("return_count") or "").lower() in ("true", "1"):
            return JSONResponse({"count": len(found)})
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
        return JSONResponse({"current": current, "total": task.spec.progress_total})

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
        if task is None or task.phase(self.clock.now())[0] != "SUCCESS":
            return error(404, f"{kind.capitalize()} not found")
        made = "file" if task.spec.outcome == "success_file" else task.spec.asset_kind
        return task if made == kind else error(404, f"{kind.capitalize()} not found")

    async def _file_info(self, request: Request) -> Response:
        task = self._output(request, "file")
        if isinstance(task, Response):
            return task
        spec = task.spec
        extension = "." + spec.file_name.rsplit(".", 1)[-1] if "." in spec.file_name else ""
        return JSONResponse(
            {
                "uuid": spec.output_uuid,
                "name": spec.file_name,
                "extension": extension,
                "file_type": FILE_TYPES.get(extension.lower(), "Document"),
                "size": spec.file_size,
                "created_at": _iso(task.epoch + spec.pending_seconds + spec.running_seconds),
                "layers": {"layers": []},
            }
        )

    async def _download(self, request: Request) -> Response:
        task = self._output(request, "file")
        if isinstance(task, Response):
            return task
        spec = task.spec
        headers = {
            "Content-Length": str(spec.file_size),
            "Content-Disposition": _disposition(spec.file_name),
        }
        return StreamingResponse(
            _chunks(task.seed, spec.file_size), 200, headers, spec.content_type
        )

    def _asset(self, kind: str) -> Any:
        async def describe(request: Request) -> Response:
            task = self._output(request, kind)
            if isinstance(task, Response):
                return task
            spec = task.spec
            body: dict[str, Any] = {
                "uuid": spec.output_uuid,
                "name": f"{spec.name} {kind}",
                "created_at": _iso(task.epoch + spec.pending_seconds + spec.running_seconds),
                "task_uuid": spec.uuid,
            }
            if kind == "layer":
                body["layer_type"] = "Polygon"
            return JSONResponse(body)

        return describe

    # -- control API -----------------------------------------------------------------------
    def control_routes(self) -> list[BaseRoute]:
        """``/_control/geobox/…``: add, inspect and clear scripted tasks; auth settings."""
        return [
            Route("/tasks", self._control_add, methods=["POST"]),
            Route("/tasks", self._control_clear, methods=["DELETE"]),
            Route("/tasks/{uuid}", self._control_show, methods=["GET"]),
            Route("/config", self._control_config, methods=["GET", "PUT"]),
        ]

    async def _control_add(self, request: Request) -> Response:
        raw = await request.body()
        try:
            data = json.loads(raw)
            specs = _SPECS.validate_python(data if isinstance(data, list) else [data])
        except (ValueError, ValidationError) as exc:
            detail = exc.errors(include_url=False) if isinstance(exc, ValidationError) else str(exc)
            return JSONResponse({"detail": json.loads(json.dumps(detail, default=str))}, 422)
        tasks = self.add_tasks(specs)
        created = [{"uuid": t.uuid, "output_uuid": t.spec.output_uuid} for t in tasks]
        return JSONResponse({"created": len(created), "tasks": created}, 201)

    async def _control_clear(self, request: Request) -> Response:
        count = len(self.tasks)
        self.clear()
        return JSONResponse({"deleted": count})

    async def _control_show(self, request: Request) -> Response:
        task = self.tasks.get(request.path_params["uuid"])
        if task is None:
            return error(404, "Task not found")
        return JSONResponse(
            {
                "spec": task.spec.model_dump(),
                "document": task.document(self.clock.now()),
                "sha256": task.sha256 if task.spec.outcome == "success_file" else None,
            }
        )

    async def _control_config(self, request: Request) -> Response:
        if request.method == "PUT":
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                return error(422, "expected a JSON object")
            return JSONResponse(self.configure(body))
        return JSONResponse(self.settings())


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


def _missing(field: str) -> dict[str, Any]:
    return {"type": "missing", "loc": ["body", field], "msg": "Field required"}


def _invalid(field: str, msg: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": ["query", field], "msg": msg}


def _iso(epoch: float) -> str:
    # naive UTC with microseconds: the first format the SDK's _parse_datetime tries
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat("T", "microseconds")


def _disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace('"', "_")
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


async def _chunks(seed: str, size: int) -> AsyncIterator[bytes]:
    for chunk in iter_output(seed, size):
        yield chunk
