"""The Geobox simulator: scripted tasks behind Geobox's own paths, JSON, auth and error bodies.

Served under ``/geobox/v1/`` (so an SDK's ``host`` is ``http://127.0.0.1:<port>/geobox/``):

    POST auth/token/                  form username, password → 200 {"access_token",
                                      "token_type"[, "expires_in"]}
    GET  tasks/                       list (state, search, skip, limit=10, return_count)
    GET  tasks/{uuid}/                the task document
    GET  tasks/{uuid}/status/         {"current", "total"}
    POST tasks/{uuid}/abort/          abort (a no-op on a finished task)
    GET  files/{uuid}/info/           file metadata      GET files/{uuid}/download/  the bytes
    GET  rasters/{uuid}/download/     a raster's bytes   GET rasters/{uuid}/content/  the same
    GET  3dmodels/{uuid}/content/     a 3D model's bytes (its obj model's, when it names one)
    GET  vectorLayers/{uuid}/, rasters/{uuid}/, 3dmodels/{uuid}/, 3dtiles/{uuid}/, tables/{uuid}/

A task's life is a script (:class:`GeoboxTaskSpec`, :mod:`.geobox_tasks`) played against the
simulation clock from the moment it is added: ``pending_seconds`` in PENDING,
``running_seconds`` in PROGRESS with ``current`` rising linearly to ``progress_total``, then its
``outcome``. Outputs exist once the task has succeeded. Errors are ``{"detail": ...}`` like the
FastAPI service the SDK talks to. Every route but the login needs ``Authorization: Bearer``
(a fixed token, or a live one from the login) or ``?apikey=``, unless ``auth_required`` is off;
the SDK sends the model download with the bearer token only, so that the API key works there
too is a guess.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from taskwarden.simulator.faults import FAULT_SCOPE_KEY, FaultBook, Stats, route_maker
from taskwarden.simulator.geobox_tasks import (
    ASSET_PATHS,
    SPECS,
    WITH_BYTES,
    WORDS,
    GeoboxTask,
    GeoboxTaskSpec,
    iso,
)
from taskwarden.simulator.script import download_response

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

NAME = "geobox"
PREFIX = "/geobox/v1"
FILE_TYPES = {".zip": "Compressed", ".tgz": "Compressed", ".gz": "Compressed", ".tif": "GeoTIFF"}
FILE_TYPES |= {".tiff": "GeoTIFF", ".geojson": "GeoJSON", ".csv": "CSV", ".gpkg": "GPKG"}
FILE_TYPES |= {".glb": "GLB", ".xlsx": "XLSX", ".png": "Image", ".jpg": "Image"}
KEPT_LOGINS = 50

__all__ = ["GeoboxSimulator", "GeoboxTask", "GeoboxTaskSpec"]


class GeoboxAuth(BaseModel):
    """Who may call: fixed tokens and API keys, password users, and the lifetime (simulation
    seconds; None: forever) of tokens that ``auth/token/`` issues."""

    model_config = ConfigDict(extra="forbid")

    auth_required: bool = True
    tokens: list[str] = ["sim-token"]
    apikeys: list[str] = ["sim-apikey"]
    users: dict[str, str] = {"sim-user": "sim-password"}
    token_ttl: float | None = Field(None, gt=0)
    # whether the login answer says expires_in (the SDK reads only access_token; unknown)
    announce_expiry: bool = True


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
        self.logins: list[dict[str, Any]] = []  # each login's form and content type, newest last

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
            if task.obj_uuid is not None:
                self.outputs[task.obj_uuid] = task
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
        tasks = self.add_tasks(SPECS.validate_python(items))
        return [{"uuid": t.uuid, "output_uuid": t.output_uuid} for t in tasks]

    def describe(self, uuid: str) -> dict[str, Any] | None:
        """A task's script, what it shows now, and its file's checksum (the control API)."""
        task = self.tasks.get(uuid)
        if task is None:
            return None
        return {
            "spec": task.script.model_dump(),
            "document": task.document(self.clock.now()),
            "sha256": task.sha256 if task.output_kind() in WITH_BYTES else None,
        }

    def clear(self) -> None:
        """Forget every task and login."""
        self.tasks = {}
        self.outputs = {}
        self.logins = []

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
            route(
                "GET",
                "rasters/{uuid}/download/",
                self._bytes("raster"),
                task_of=self._owner,
                json=False,
            ),
            route(
                "GET",
                "rasters/{uuid}/content/",
                self._bytes("raster"),
                task_of=self._owner,
                json=False,
            ),
            route(
                "GET",
                "3dmodels/{uuid}/content/",
                self._bytes("model"),
                task_of=self._owner,
                json=False,
            ),
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
        seen = {"content_type": request.headers.get("content-type"), "form": form}
        self.logins = [*self.logins[-KEPT_LOGINS + 1 :], seen]
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
        body: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if ttl is not None and self.auth.announce_expiry:
            body["expires_in"] = ttl
        return JSONResponse(body)

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
        """The succeeded task whose ``kind`` output (or obj model) the path names, or the
        refusal."""
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
                "created_at": iso(task.ended(self.clock.now()) or task.epoch),
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
            return JSONResponse(task.asset(self.clock.now(), request.path_params["uuid"]))

        return describe

    def _bytes(self, kind: str) -> Any:
        """A raster's or model's bytes; a model naming an obj model has them only there."""

        async def download(request: Request) -> Response:
            task = self._output(request, kind)
            if isinstance(task, Response):
                return task
            if request.path_params["uuid"] != task.content_uuid:
                return error(404, f"{kind.capitalize()} has no content")
            script = task.script
            if kind == "model":  # the SDK names the file itself ({name}.glb)
                response = download_response(task.seed, script.file_size, "", script.content_type)
                del response.headers["content-disposition"]
                return response
            return task.download()

        return download


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
