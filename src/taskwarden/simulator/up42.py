"""The UP42 simulator: v1 jobs and job tasks, v2 processing jobs, OAuth tokens, signed URLs.

Served under ``/up42`` (what ``Up42Settings.base_url`` wants is ``http://127.0.0.1:<port>/up42``):

    POST oauth/token                                   password grant or client credentials
                                                       (HTTP Basic project_id:api_key)
    POST realms/public/protocol/openid-connect/token   the same, where SDK 4.x asks
    GET  realms/public/protocol/openid-connect/userinfo {"sub": ...}
    GET  users/me                                      {"data": {"id": workspace}} (old SDKs)
    GET  projects/{p}/jobs/{j}                         {"data": job, "error": null}
    POST projects/{p}/jobs/{j}/cancel/                 204; the job goes CANCELLING, CANCELLED
    GET  projects/{p}/jobs/{j}/tasks/                  {"data": [task, ...]}
    GET  …/jobs/{j}[/tasks/{t}]/outputs/data-json/     GeoJSON FeatureCollection (no envelope)
    GET  …/jobs/{j}[/tasks/{t}]/downloads/results/     {"data": {"url": <signed URL>}}
    GET  …/tasks/{t}/outputs/quicklooks/[{name}]       {"data": [names]} / image bytes
    GET  …/tasks/{t}/logs                              text/plain
    GET  v2/processing/jobs/{id}                       a processing job (no envelope)
    GET  v2/assets/stac/, v2/assets/stac/collections/{id}   STAC landing page and collection
    GET  signed/{owner}/output.tgz?expires=&signature= the results, no auth; 400 ExpiredToken
                                                       (Google Cloud Storage's) once expired

v1 errors are ``{"data": null, "error": {"code", "message"}}``; v2 errors are RFC 7807 problem
documents; token errors are OAuth's ``{"error", "error_description"}``. Bearer tokens are checked
on every API route unless ``auth_required`` is off; tokens issued by the token routes live
``token_ttl`` simulation seconds while announcing ``announced_ttl`` in ``expires_in``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute

from taskwarden.simulator.faults import FAULT_SCOPE_KEY, FaultBook, Stats, route_maker
from taskwarden.simulator.up42_jobs import Up42Job, Up42JobSpec, Up42Task
from taskwarden.simulator.up42_processing import Up42Processing, Up42ProcessingSpec

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

NAME = "up42"
PREFIX = "/up42"
JOB = "projects/{project}/jobs/{job}"
TASK = JOB + "/tasks/{task}"
KEYCLOAK = "realms/public/protocol/openid-connect"
_JOB_SPECS = TypeAdapter(list[Up42JobSpec])
_PROCESSING_SPECS = TypeAdapter(list[Up42ProcessingSpec])


class Up42Auth(BaseModel):
    """Who may call, and how tokens behave (times in simulation seconds)."""

    model_config = ConfigDict(extra="forbid")

    auth_required: bool = True
    tokens: list[str] = ["sim-token"]  # fixed bearer tokens that never expire
    users: dict[str, str] = {"sim-user": "sim-password"}  # password grant
    projects: dict[str, str] = {"sim-project": "sim-api-key"}  # client credentials
    token_ttl: float = Field(300.0, gt=0)  # the SDK's five minutes
    announced_ttl: float | None = Field(None, ge=0)  # expires_in sent; None: token_ttl, 0: none
    # where the token is: access_token (new), data.accessToken (old SDKs), or both
    token_shape: Literal["new", "old", "both"] = "both"  # noqa: S105 not a secret


class Up42Simulator:
    """UP42's state: v1 jobs (and their tasks), v2 processing jobs, tokens and counters."""

    name = NAME
    prefix = PREFIX

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.jobs: dict[str, Up42Job] = {}
        self.tasks: dict[str, Up42Task] = {}
        self.processing: dict[str, Up42Processing] = {}
        self.auth = Up42Auth()
        self.issued: dict[str, float] = {}  # token → expiry (simulation time)
        self.rejected = 0  # requests refused for an unknown or expired token
        self.token_grants = 0  # tokens issued
        self._secret = secrets.token_bytes(16)

    # -- scripting ------------------------------------------------------------------------
    def add_job(self, spec: Up42JobSpec | None = None, **fields: Any) -> Up42Job:
        """Add a v1 job (and its tasks) from a spec or its fields; its clock starts now."""
        return self.add_jobs([spec if spec is not None else Up42JobSpec(**fields)])[0]

    def add_jobs(self, specs: Iterable[Up42JobSpec | Mapping[str, Any]]) -> list[Up42Job]:
        items = [s if isinstance(s, Up42JobSpec) else Up42JobSpec(**s) for s in specs]
        now = self.clock.now()
        added = [Up42Job(spec, now, self.clock.epoch(now)) for spec in items]
        for job in added:
            self.jobs[job.id] = job
            self.tasks.update((task.id, task) for task in job.tasks)
        return added

    def add_processing(
        self, spec: Up42ProcessingSpec | None = None, **fields: Any
    ) -> Up42Processing:
        """Add a v2 processing job from a spec or its fields; its clock starts now."""
        spec = spec if spec is not None else Up42ProcessingSpec(**fields)
        now = self.clock.now()
        job = Up42Processing(spec, now, self.clock.epoch(now))
        self.processing[job.id] = job
        return job

    def status(self, job_id: str) -> str:
        """The status word a v1 job, job task or processing job shows now."""
        now = self.clock.now()
        if job_id in self.jobs:
            return self.jobs[job_id].word(now)
        if job_id in self.tasks:
            task = self.tasks[job_id]
            return task.job.task_word(task.index, now)
        return self.processing[job_id].word(now)

    def cancel(self, job_id: str) -> bool:
        """Cancel a v1 job that has not finished; False when it had."""
        return self.jobs[job_id].abort(self.clock.now())

    def revoke_tokens(self) -> None:
        """Expire every issued token now (the next call with one is a 401)."""
        self.issued = dict.fromkeys(self.issued, self.clock.now())

    # -- the Platform protocol (control API) ---------------------------------------------
    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add jobs from JSON specs: ``{"kind": "processing", ...}``, else a v1 job."""
        jobs = [i for i in items if not (isinstance(i, dict) and i.get("kind") == "processing")]
        processing = [{k: v for k, v in i.items() if k != "kind"} for i in items if i not in jobs]
        job_specs = _JOB_SPECS.validate_python(
            [
                {k: v for k, v in i.items() if k != "kind"} if isinstance(i, dict) else i
                for i in jobs
            ]
        )
        processing_specs = _PROCESSING_SPECS.validate_python(processing)
        created: list[dict[str, Any]] = [
            {"kind": "job", "id": j.id, "project_id": j.spec.project_id,
             "tasks": [t.id for t in j.tasks]}
            for j in self.add_jobs(job_specs)
        ]  # fmt: skip
        created += [
            {"kind": "processing", "id": self.add_processing(spec).id} for spec in processing_specs
        ]
        return created

    def describe(self, job_id: str) -> dict[str, Any] | None:
        """A job's (or task's) script, what it shows now, and its outputs' checksums."""
        now = self.clock.now()
        if job_id in self.processing:
            job = self.processing[job_id]
            return {"spec": job.spec.model_dump(), "document": job.document(now, "")}
        task = self.tasks.get(job_id)
        if task is not None:
            return {
                "document": task.document(now),
                "results_sha256": task.results_sha256,
                "quicklooks_sha256": task.quicklooks_sha256,
            }
        if job_id not in self.jobs:
            return None
        v1 = self.jobs[job_id]
        return {
            "spec": v1.spec.model_dump(),
            "document": v1.document(now),
            "tasks": [t.document(now) for t in v1.tasks],
            "results_sha256": v1.results.results_sha256,
        }

    def clear(self) -> None:
        """Forget every job and issued token."""
        self.jobs, self.tasks, self.processing, self.issued = {}, {}, {}, {}
        self.rejected = self.token_grants = 0

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change some of the :class:`Up42Auth` settings; raises ``ValidationError``."""
        self.auth = Up42Auth.model_validate({**self.auth.model_dump(), **settings})
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return self.auth.model_dump()

    # -- HTTP ------------------------------------------------------------------------------
    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The platform's routes, counted and fault-injectable, relative to ``prefix``."""
        from taskwarden.simulator import up42_routes

        route = route_maker(NAME, faults, stats, v1_error)

        return list(up42_routes.build(self, route))

    def denied(self, request: Request, v2: bool = False) -> Response | None:
        """The 401 for a request without a valid bearer token, or None."""
        if not self.auth.auth_required:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        if token is not None and token in self.auth.tokens:
            return None
        expiry = self.issued.get(token or "")
        if expiry is not None and expiry > self.clock.now():
            return None
        self.rejected += 1
        reason = "Token expired" if expiry is not None else "Invalid or missing token"
        return problem(401, reason) if v2 else v1_error(401, reason)

    async def grant(self, request: Request) -> Response:
        """Issue a token for a password grant or client credentials."""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        grant = form.get("grant_type")
        if grant == "password":
            ok = self.auth.users.get(form.get("username", "")) == form.get("password")
            who: str | None = form.get("username", "")
        elif grant == "client_credentials":
            who, secret = _basic(request.headers.get("authorization", ""))
            ok = who is not None and self.auth.projects.get(who) == secret
        else:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": f"grant {grant!r}"}, 400
            )
        if not ok:
            body = {"error": "invalid_grant", "error_description": "Invalid user credentials"}
            return JSONResponse(body, 401)
        token = "sim-" + secrets.token_urlsafe(16)
        self.issued[token] = self.clock.now() + self.auth.token_ttl
        self.token_grants += 1
        announced = (
            self.auth.token_ttl if self.auth.announced_ttl is None else self.auth.announced_ttl
        )
        answer: dict[str, Any] = {}
        if self.auth.token_shape in ("new", "both"):
            answer |= {"access_token": token, "token_type": "bearer", "scope": "openid"}
            if announced:
                answer["expires_in"] = int(announced)
        if self.auth.token_shape in ("old", "both"):
            # no "error" key, not even null: OAuth clients (oauthlib) read any as a failure
            answer |= {"data": {"accessToken": token}}
        return JSONResponse(answer)

    def sign(self, base_url: str, owner: str, ttl: float) -> str:
        """A signed URL for ``owner``'s results, valid ``ttl`` simulation seconds."""
        expires = f"{self.clock.now() + ttl:.3f}"
        signature = self._mac(owner, expires)
        return f"{base_url}/signed/{owner}/output.tgz?expires={expires}&signature={signature}"

    def signature_ok(self, owner: str, expires: str, signature: str) -> bool:
        return hmac.compare_digest(self._mac(owner, expires), signature)

    def _mac(self, owner: str, expires: str) -> str:
        return hmac.new(self._secret, f"{owner}:{expires}".encode(), hashlib.sha256).hexdigest()


def v1_error(status: int, message: str) -> Response:
    """UP42's v1 error envelope."""
    codes = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 429: "TOO_MANY_REQUESTS"}
    code = codes.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else "BAD_REQUEST")
    return JSONResponse({"data": None, "error": {"code": code, "message": message}}, status)


def problem(status: int, detail: str) -> Response:
    """An RFC 7807 problem document, as v2 endpoints answer errors."""
    titles = {401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
    body = {"type": "about:blank", "title": titles.get(status, "Error"), "status": status}
    return JSONResponse(body | {"detail": detail}, status, media_type="application/problem+json")


def expired(owner: str) -> Response:
    """Google Cloud Storage's answer to an expired signed URL."""
    body = (
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
        "<Message>The provided token has expired.</Message>"
        f"<Details>Request signature expired for {owner}/output.tgz</Details></Error>"
    )
    return PlainTextResponse(body, 400, media_type="application/xml; charset=UTF-8")


def fault_word(request: Request) -> str | None:
    fault = request.scope.get(FAULT_SCOPE_KEY)
    return fault.word if fault is not None and fault.kind == "unknown_status" else None


def base_url(request: Request) -> str:
    """This simulator's UP42 base URL as the client reached it (signed URLs point back here)."""
    return str(request.base_url).rstrip("/") + PREFIX


def _basic(header: str) -> tuple[str | None, str | None]:
    if header[:6].lower() != "basic ":
        return None, None
    try:
        user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return user, secret
