"""The isahit lab routes the SDK creates batches and tasks through, and the batch and project
documents it reads (``isahitlab`` 0.17: ``create_batch``, ``create_tasks``)::

    GET   api/project-manager/projects?ids=…          the project, paged (create_tasks looks)
    GET   api/project-configuration-manager/projects/{id}/project-configuration
    POST  api/task-manager/batches                    {name, projectId} → the batch
    GET   api/task-manager/batches?projectId=…        the project's batches, paged
    GET   api/task-manager/batches/{id}               a batch
    PATCH api/task-manager/batches/{id}/tasks-duplicate   {names} → {duplicate: [names]}
    POST  api/data-manager/import-data/json?skipTaskCreation=true&grantAccess=true
                                                      {batchId, name, body} → {initialDataId,
                                                      accessToken}
    POST  api/file-manager/files?skipTaskCreation=true  multipart file, form path, batchId
                                                      → {_id, name}
    POST  api/file-manager/grant/files                {ids} → {accessToken}
    POST  api/task-manager/batches/{id}/tasks         {name, resources, properties, dataId,
                                                      grantResources, grantData} → the task

The SDK creates one task per ``POST …/tasks``, so a batch grows while it is being worked on. A
task created here plays the ``api_*`` script of the simulator's settings. What the real API
answers beyond the fields the SDK reads (status codes 201, the batch document, the grant
tokens' meaning) is a guess.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from taskwarden.simulator.isahit_tasks import (
    FINAL_WORDS,
    LABELS,
    PROJECT_TYPE,
    IsahitTaskSpec,
    iso,
    object_id,
)

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock
    from taskwarden.simulator.isahit_tasks import IsahitTask, Reopened

OVERWRITE = "__project_configuration_overwrite__"  # the SDK's key inside imported data
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def error(status: int, message: Any, code: int | None = None) -> Response:
    """An isahit (NestJS) error: ``{"statusCode", "message", "error"}``, ``errorCode`` on 400."""
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if status != 401:  # Nest's bare UnauthorizedException says only the message
        body["error"] = REASONS.get(status, "Error")
    if code is not None:
        body["errorCode"] = code
    return JSONResponse(body, status)


class Platform(Protocol):
    """What the creation routes need of the isahit simulator (:mod:`.isahit`, which owns them)."""

    clock: SimClock
    tasks: dict[str, IsahitTask]
    batches: dict[str, str]
    reopened: dict[str, Reopened]

    @property
    def auth(self) -> Any: ...

    def denied(self, request: Request) -> Response | None: ...

    def projects(self) -> set[str]: ...

    def add_task(self, spec: IsahitTaskSpec | None = None, **fields: Any) -> IsahitTask: ...

    def document(self, task_id: str, fields: Iterable[str] = ()) -> dict[str, Any]: ...


class Creation:
    """What the creation routes keep: batch names, imported data, uploaded files, grants."""

    def __init__(self, sim: Platform) -> None:
        self.sim = sim
        self.clear()

    def clear(self) -> None:
        self.names: dict[str, str] = {}  # batch id → name
        self.data: dict[str, dict[str, Any]] = {}  # initialDataId → body
        self.files: dict[str, str] = {}  # file id → name
        self.grants: dict[str, frozenset[str]] = {}  # access token → ids it grants

    # -- projects and batches --------------------------------------------------------------------
    async def projects(self, request: Request) -> Response:
        if (denied := self.sim.denied(request)) is not None:
            return denied
        wanted = request.query_params.getlist("ids")
        found = [p for p in sorted(self.sim.projects()) if not wanted or p in wanted]
        docs = [{"_id": p, "name": f"project {p}", "projectType": PROJECT_TYPE, "status": "pending"}
                for p in found]  # fmt: skip
        return JSONResponse(page(docs, request))

    async def configuration(self, request: Request) -> Response:
        if (denied := self.sim.denied(request)) is not None:
            return denied
        project = request.path_params["project_id"]
        if project not in self.sim.projects():
            return error(404, "Project not found")
        labels = [{"id": name, "name": name, "color": "#3366ff"} for name in LABELS]
        return JSONResponse(
            {
                "_id": f"{project}-configuration",
                "projectId": project,
                "projectType": PROJECT_TYPE,
                # where the SDK's label helpers look (helpers/labels.py)
                "metadata": {
                    "labelOptions": {
                        "mainLists": [{"name": "main", "keys": ["main"]}],
                        "availableLabels": {"main": labels},
                    },
                    "toolOptions": {},
                },
            }
        )

    async def create_batch(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        name, project = body.get("name"), body.get("projectId")
        if not isinstance(name, str) or not name or not isinstance(project, str) or not project:
            return error(400, ["name must be a string", "projectId must be a string"])
        batch = object_id()
        self.sim.batches[batch] = project
        self.names[batch] = name
        return JSONResponse(self.batch_document(batch), 201)

    async def list_batches(self, request: Request) -> Response:
        if (denied := self.sim.denied(request)) is not None:
            return denied
        project = request.query_params.get("projectId")
        docs = [self.batch_document(b) for b, p in list(self.sim.batches.items())
                if project is None or p == project]  # fmt: skip
        return JSONResponse(page(docs, request))

    async def batch(self, request: Request) -> Response:
        if (denied := self.sim.denied(request)) is not None:
            return denied
        batch_id = request.path_params["batch_id"]
        if batch_id not in self.sim.batches:
            return error(404, "Batch not found")
        return JSONResponse(self.batch_document(batch_id))

    def batch_document(self, batch_id: str) -> dict[str, Any]:
        """A batch: ``complete`` when it has tasks and all are final (a guess), its times."""
        sim = self.sim
        members = [t for t in list(sim.tasks.values()) if t.script.batch_id == batch_id]
        now = sim.clock.now()
        words = [t.status(now, sim.reopened.get(t.task_id)) for t in members]
        final = bool(members) and all(word in FINAL_WORDS for word, _ in words)
        times = [t.epoch for t in members] or [sim.clock.epoch(now)]
        changes = [t.wall(since) for t, (_, since) in zip(members, words, strict=True)]
        return {
            "_id": batch_id,
            "name": self.names.get(batch_id, f"batch {batch_id}"),
            "projectId": sim.batches[batch_id],
            "status": "complete" if final else "pending",
            "createdAt": iso(min(times)),
            "updatedAt": iso(max(changes or times)),
        }

    # -- tasks -----------------------------------------------------------------------------------
    async def duplicates(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        batch = request.path_params["batch_id"]
        names = body.get("names")
        if not isinstance(names, list):
            return error(400, "names must be an array")
        taken = {t.script.name for t in list(self.sim.tasks.values()) if t.script.batch_id == batch}
        return JSONResponse({"duplicate": [n for n in names if n in taken]})

    async def import_data(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        if body.get("batchId") not in self.sim.batches or not isinstance(body.get("body"), dict):
            return error(400, "batchId must name a batch and body must be an object")
        data_id = object_id()
        self.data[data_id] = {k: v for k, v in body["body"].items() if k != OVERWRITE}
        return JSONResponse({"initialDataId": data_id, "accessToken": self._grant({data_id})}, 201)

    async def upload(self, request: Request) -> Response:
        if (denied := self.sim.denied(request)) is not None:
            return denied
        parts = multipart(request.headers.get("content-type", ""), await request.body())
        if (
            "file" not in parts
            or parts.get("batchId", (None, b""))[1].decode() not in self.sim.batches
        ):
            return error(400, "a file and the batchId of a batch are required")
        file_id = object_id()
        self.files[file_id] = parts["file"][0] or "upload"
        return JSONResponse({"_id": file_id, "name": self.files[file_id]}, 201)

    async def grant_files(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or any(i not in self.files for i in ids):
            return error(400, "ids must name uploaded files")
        return JSONResponse({"accessToken": self._grant(set(ids))}, 201)

    async def create_task(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        batch = request.path_params["batch_id"]
        if batch not in self.sim.batches:
            return error(404, "Batch not found")
        name, data_id = body.get("name"), body.get("dataId")
        resources = body.get("resources") or []
        if not isinstance(name, str) or not name or not isinstance(resources, list):
            return error(400, "name must be a string and resources an array")
        if data_id is not None and data_id not in self.grants.get(body.get("grantData") or "", ()):
            return error(403, "grantData does not grant dataId")
        files = [r["id"] for r in resources if isinstance(r, dict) and "id" in r]
        if files and not set(files) <= self.grants.get(body.get("grantResources") or "", set()):
            return error(403, "grantResources does not grant the resources")
        properties = body.get("properties") or {}
        config = self.sim.auth
        spec = IsahitTaskSpec(
            name=name, batch_id=batch, project_id=self.sim.batches[batch],
            pending_seconds=config.api_pending_seconds, running_seconds=config.api_running_seconds,
            final_status=config.api_final_status, resources=resources,
            initial_body=self.data.get(data_id) if data_id else None,
            custom=properties.get("custom") or {} if isinstance(properties, dict) else {},
        )  # fmt: skip
        task = self.sim.add_task(spec)
        return JSONResponse(self.sim.document(task.task_id), 201)

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        if (denied := self.sim.denied(request)) is not None:
            return denied
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return error(400, "the body is not JSON")
        return body if isinstance(body, dict) else error(400, "the body is not an object")

    def _grant(self, ids: set[str]) -> str:
        token = secrets.token_urlsafe(16)
        self.grants[token] = frozenset(ids)
        return token


def page(docs: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """mongoose-paginate-v2's envelope around ``docs`` for the request's page and limit."""
    q = request.query_params
    limit = max(1, int(q.get("limit") or 10)) if (q.get("limit") or "1").isdigit() else 10
    number = int(q.get("page") or 1) if (q.get("page") or "1").isdigit() else 1
    pages = max(1, -(-len(docs) // limit))
    start = (max(1, number) - 1) * limit
    return {
        "docs": docs[start : start + limit], "totalDocs": len(docs), "limit": limit,
        "totalPages": pages, "page": number, "pagingCounter": start + 1,
        "hasPrevPage": number > 1, "hasNextPage": number < pages,
        "prevPage": number - 1 if number > 1 else None,
        "nextPage": number + 1 if number < pages else None,
    }  # fmt: skip


def multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's parts by name: (file name, bytes)."""
    if not content_type.startswith("multipart/form-data"):
        return {}
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts[name] = (part.get_filename(), payload)
    return parts
