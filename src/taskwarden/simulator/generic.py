"""The generic simulator: "any platform", in a JSON shape of the test's choosing, for the
generic ``http`` provider (there is no real platform or SDK behind it to be faithful to).

Served under ``/generic/``:

    POST oauth/token                             a token for client credentials (HTTP Basic or
                                                 form fields ``client_id``/``client_secret``;
                                                 form or JSON body) → {"access_token", "expires_in"}
    GET  api/jobs/{job_id}                       the status document, in the task's shape
    GET  api/projects/{project}/jobs/{job_id}    the same; 404 unless it is the task's project
    POST api/jobs/{job_id}/cancel                cancel (a no-op once the job has ended)
    GET  api/jobs/{job_id}/files/{name}          an output (credentials required); with
                                                 ``outputs_at="redirect"`` a 302 to storage
    GET  storage/{job_id}/{name}?expires=&sig=   an output by signed URL, like object storage:
                                                 400 when credentials come along, 403 expired

Each job's shape (:class:`~taskwarden.simulator.generic_jobs.GenericShape`) says where the
status word, title, progress, error and outputs go (dotted paths) and which words it uses.
Credentials (:class:`GenericAuth`): an API key header, static bearer tokens, or tokens from
``oauth/token`` that expire after ``token_ttl`` simulation seconds. Errors are
``{"error": {"code", "message"}}``. Refused requests are counted by reason and job
(:meth:`GenericSimulator.rejected`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from taskwarden.simulator.faults import FAULT_SCOPE_KEY, FaultBook, Stats, route_maker
from taskwarden.simulator.generic_jobs import (
    SPECS,
    GenericOutput,
    GenericShape,
    GenericTask,
    GenericTaskSpec,
)
from taskwarden.simulator.script import download_response

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

NAME = "generic"
PREFIX = "/generic"
STATUS_ROUTES = ("api/jobs/{job_id}", "api/projects/{project}/jobs/{job_id}")


class GenericAuth(BaseModel):
    """Who may call, and how long tokens and signed URLs live (simulation seconds)."""

    model_config = ConfigDict(extra="forbid")

    auth_required: bool = True
    api_key_header: str = "X-Api-Key"
    api_key_query: str | None = "api_key"  # the key may come as ?api_key= too
    api_keys: list[str] = ["sim-key"]
    tokens: list[str] = ["sim-token"]
    clients: dict[str, str] = {"sim-client": "sim-secret"}
    token_ttl: float | None = Field(None, gt=0)
    announce_ttl: bool = True  # off: expires_in is not sent, so only a 401 tells
    signed_url_ttl: float = Field(300.0, gt=0)


class GenericSimulator:
    """The generic platform's state: jobs, credentials, issued tokens, refusals."""

    name = NAME
    prefix = PREFIX

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.tasks: dict[str, GenericTask] = {}
        self.auth = GenericAuth()
        self.issued: dict[str, float | None] = {}  # token → expiry (sim time)
        self.refusals: Counter[tuple[str, str | None]] = Counter()  # (reason, job id)
        self._key = secrets.token_bytes(16)

    def add_task(self, spec: GenericTaskSpec | None = None, **fields: Any) -> GenericTask:
        """Add one scripted job, from a spec or its fields; its clock starts now."""
        return self.add_tasks([spec if spec is not None else GenericTaskSpec(**fields)])[0]

    def add_tasks(self, specs: Iterable[GenericTaskSpec | Mapping[str, Any]]) -> list[GenericTask]:
        """Add many scripted jobs at once (all validated before any is added)."""
        items = [s if isinstance(s, GenericTaskSpec) else GenericTaskSpec(**s) for s in specs]
        now = self.clock.now()
        added = [GenericTask(s, s.seed or s.id, now, self.clock.epoch(now)) for s in items]
        self.tasks.update((task.id, task) for task in added)
        return added

    def state(self, job_id: str) -> str:
        """The status word the job shows now."""
        task = self.tasks[job_id]
        return task.script.shape.words[task.phase(self.clock.now())[0]]

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not ended; False when it had."""
        return self.tasks[job_id].abort(self.clock.now())

    def rejected(self, reason: str | None = None, task: str | None = None) -> int:
        """Requests refused, by reason (``expired_token``, ``bad_token``, ``bad_key``,
        ``no_credentials``, ``credentials_on_signed_url``, ``expired_url``) and job."""
        return sum(
            n
            for (r, t), n in self.refusals.copy().items()  # the server thread may be adding
            if reason in (None, r) and (task is None or t == task)
        )

    def document(self, task: GenericTask, base: str, word: str | None = None) -> dict[str, Any]:
        """The status document of ``task`` now; output URLs start at ``base`` (``…/generic/``)."""

        def link(out: GenericOutput) -> str:
            if task.script.shape.outputs_at == "storage":
                return self.signed_url(task, out.name, base)
            return f"{base}api/jobs/{task.id}/files/{quote(out.name, safe='')}"

        return task.document(self.clock.now(), link, word)

    def signed_url(self, task: GenericTask, name: str, base: str) -> str:
        """A storage URL for one output, valid for ``signed_url_ttl`` from now."""
        host = task.script.shape.storage_host
        parts = urlsplit(base)
        if host and parts.netloc:  # another origin: the same server under another host name
            base = urlunsplit(
                parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
            )
        expires = f"{self.clock.now() + self.auth.signed_url_ttl:.3f}"
        sig = self._sign(task.id, name, expires)
        return f"{base}storage/{task.id}/{quote(name, safe='')}?expires={expires}&sig={sig}"

    def _sign(self, job_id: str, name: str, expires: str) -> str:
        message = f"{job_id}/{name}/{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    # -- control API (the Platform protocol) ---------------------------------------------------
    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add jobs from JSON specs; raises ``ValidationError``."""
        return [{"id": t.id} for t in self.add_tasks(SPECS.validate_python(items))]

    def describe(self, job_id: str) -> dict[str, Any] | None:
        task = self.tasks.get(job_id)
        if task is None:
            return None
        return {
            "spec": task.script.model_dump(),
            "document": self.document(task, f"{PREFIX}/"),
            "checksums": task.checksums,
        }

    def clear(self) -> None:
        self.tasks = {}
        self.refusals.clear()

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change some :class:`GenericAuth` settings; raises ``ValidationError``."""
        self.auth = GenericAuth.model_validate({**self.auth.model_dump(), **settings})
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return self.auth.model_dump()

    # -- HTTP --------------------------------------------------------------------------------
    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The API routes, counted and fault-injectable, relative to ``prefix``."""

        route = route_maker(NAME, faults, stats, error)

        job = _job_param
        words = frozenset({"unknown_status"})
        return [
            route("POST", "oauth/token", self._token),
            *(route("GET", p, self._status, task_of=job, kinds=words) for p in STATUS_ROUTES),
            route("POST", "api/jobs/{job_id}/cancel", self._cancel, task_of=job),
            route("GET", "api/jobs/{job_id}/files/{name}", self._file, task_of=job, json=False),
            route("GET", "storage/{job_id}/{name}", self._storage, task_of=job, json=False),
        ]

    def _refuse(self, reason: str, job_id: str | None, status: int, message: str) -> Response:
        self.refusals[(reason, job_id)] += 1
        return error(status, message, code=reason)

    def _denied(self, request: Request, job_id: str | None) -> Response | None:
        auth = self.auth
        if not auth.auth_required:
            return None
        key = request.headers.get(auth.api_key_header)
        if key is None and auth.api_key_query:
            key = request.query_params.get(auth.api_key_query)
        if key is not None:
            if key in auth.api_keys:
                return None
            return self._refuse("bad_key", job_id, 401, "invalid API key")
        header = request.headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            return self._refuse("no_credentials", job_id, 401, "authentication required")
        token = header[7:].strip()
        if token in auth.tokens:
            return None
        if token not in self.issued:
            return self._refuse("bad_token", job_id, 401, "invalid access token")
        expiry = self.issued[token]
        if expiry is not None and expiry <= self.clock.now():
            return self._refuse("expired_token", job_id, 401, "the access token has expired")
        return None

    async def _token(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", "replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                form = {k: str(v) for k, v in dict(json.loads(raw or "{}")).items()}
            except (ValueError, TypeError):
                return JSONResponse({"error": "invalid_request"}, 400)
        else:
            form = dict(parse_qsl(raw))
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(basic[6:].strip()).decode()
            except ValueError:
                decoded = ":"
            client_id, _, secret = decoded.partition(":")
        if client_id is None or self.auth.clients.get(client_id) != secret:
            return JSONResponse({"error": "invalid_client"}, 401)
        token = "gen-" + secrets.token_urlsafe(16)
        ttl = self.auth.token_ttl
        self.issued[token] = None if ttl is None else self.clock.now() + ttl
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if ttl is not None and self.auth.announce_ttl:
            body["expires_in"] = ttl
        return JSONResponse(body)

    def _lookup(self, request: Request) -> GenericTask | Response:
        job_id = request.path_params["job_id"]
        if (denied := self._denied(request, job_id)) is not None:
            return denied
        task = self.tasks.get(job_id)
        project = request.path_params.get("project")
        if task is None or (project is not None and project != task.script.project):
            return error(404, f"no job {job_id!r}", code="not_found")
        return task

    async def _status(self, request: Request) -> Response:
        task = self._lookup(request)
        if isinstance(task, Response):
            return task
        return JSONResponse(self.document(task, _base(request), _word(request)))

    async def _cancel(self, request: Request) -> Response:
        task = self._lookup(request)
        if isinstance(task, Response):
            return task
        task.abort(self.clock.now())
        return JSONResponse(self.document(task, _base(request)), 202)

    def _output(self, task: GenericTask, name: str) -> tuple[GenericOutput, str] | None:
        if task.phase(self.clock.now())[0] != "succeeded":
            return None
        return next(((o, s) for o, s in task.outputs() if o.name == name), None)

    async def _file(self, request: Request) -> Response:
        task = self._lookup(request)
        if isinstance(task, Response):
            return task
        found = self._output(task, request.path_params["name"])
        if found is None:
            return error(404, "no such output", code="not_found")
        out, seed = found
        if task.script.shape.outputs_at == "redirect":
            return RedirectResponse(self.signed_url(task, out.name, _base(request)), 302)
        return download_response(seed, out.size, out.name, out.content_type)

    async def _storage(self, request: Request) -> Response:
        job_id, name, auth = request.path_params["job_id"], request.path_params["name"], self.auth
        carried = [request.headers.get("authorization"), request.headers.get(auth.api_key_header)]
        if auth.api_key_query:
            carried.append(request.query_params.get(auth.api_key_query))
        if any(value is not None for value in carried):
            return self._refuse(
                "credentials_on_signed_url", job_id, 400, "Only one auth mechanism allowed"
            )
        expires = request.query_params.get("expires", "")
        given = request.query_params.get("sig", "")
        if not hmac.compare_digest(given, self._sign(job_id, name, expires)):
            return error(403, "signature does not match", code="SignatureDoesNotMatch")
        if float(expires) <= self.clock.now():
            return self._refuse("expired_url", job_id, 403, "Request has expired")
        task = self.tasks.get(job_id)
        found = None if task is None else self._output(task, name)
        if found is None:
            return error(404, "no such object", code="NoSuchKey")
        out, seed = found
        return download_response(seed, out.size, out.name, out.content_type)


def default_states() -> dict[str, list[str]]:
    """The status words of jobs in the default shape, by canonical state (a profile's states)."""
    return {state: [word] for state, word in GenericShape().words.items()}


def profile(root: str, key: str = "sim-key") -> dict[str, Any]:
    """An ``http`` provider profile for jobs in the default shape, the simulator at ``root``
    (``SimulatorServer.generic_url``): register them as ``<name>:<job id>`` with
    ``params={"project": <the job's project>}``."""
    return {
        "status_url": root + "api/projects/{project}/jobs/{id}",
        "status_path": "/data/attributes/phase",
        "states": default_states(),
        "name_path": "/data/attributes/title",
        "progress_path": "/data/attributes/percent",
        "error_path": "/data/attributes/error/message",
        "outputs_path": "/data/attributes/outputs",
        "output_url_path": "href",
        "output_name_path": "filename",
        "abort_url": root + "api/jobs/{id}/cancel",
        "headers": {"X-Api-Key": key},
    }


def error(status: int, message: str, *, code: str = "error") -> Response:
    """An error response: ``{"error": {"code", "message"}}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers)


def _base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}{PREFIX}/"


def _job_param(params: Mapping[str, Any]) -> str | None:
    value = params.get("job_id")
    return value if isinstance(value, str) else None


def _word(request: Request) -> str | None:
    fault = request.scope.get(FAULT_SCOPE_KEY)
    return fault.word if fault is not None and fault.kind == "unknown_status" else None
