"""The HTTP API: read watches and stats, register, cancel and re-arm, follow transitions.

It reads the store and enqueues work; it never polls a platform nor downloads an output.
Writes need ``Authorization: Bearer <token>`` (:mod:`taskwarden.api_token`); reads too when
``TASKWARDEN_API__READ_AUTH`` is on. Health, readiness, the dashboard and its files are open.
"""

from __future__ import annotations

import hmac
import importlib.resources
import mimetypes
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import redis
from celery import Celery
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from taskwarden import api_token, keys, service
from taskwarden.api import events, schemas
from taskwarden.api.health import Readiness
from taskwarden.api.schemas import errors
from taskwarden.config import Settings
from taskwarden.errors import InvalidRegistration
from taskwarden.lifecycle import State
from taskwarden.models import Registration, Watch
from taskwarden.store import SORTS, BadQuery, NotRearmable, Store

STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
STATIC_TYPES = (".html", ".js", ".css", ".svg", ".png", ".ico", ".json", ".txt")
WEB_PACKAGE = "taskwarden.web"
SSE_HEARTBEAT = 15.0

bearer = HTTPBearer(auto_error=False, description="The API token (TASKWARDEN_API__TOKEN)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def create_app(
    settings: Settings, redis_url: str, *, sse_heartbeat: float = SSE_HEARTBEAT
) -> FastAPI:
    """The API app for a resolved Redis URL (the embedded server's, if any)."""
    client = redis.Redis.from_url(
        redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30,
        health_check_interval=30,
    )  # fmt: skip
    store = Store(client, history_limit=settings.history_limit)
    producer = Celery("taskwarden-api", broker=redis_url, set_as_current=False)
    producer.conf.update(task_serializer="json", broker_connection_retry_on_startup=False)
    readiness = Readiness(settings, store, producer)
    token = api_token.load_or_create(settings).encode()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        readiness.close()
        client.close()

    app = FastAPI(
        title="taskwarden",
        version="1",
        summary="Watches long-running tasks on remote platforms and archives their outputs.",
        lifespan=lifespan,
    )

    def authorized(credentials: HTTPAuthorizationCredentials | None) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, token):
            raise HTTPException(
                401,
                "missing bearer token" if credentials is None else "wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def write_auth(credentials: Credentials) -> None:
        authorized(credentials)

    def read_auth(credentials: Credentials) -> None:
        if settings.api.read_auth:
            authorized(credentials)

    reads = [Depends(read_auth)]
    writes = [Depends(write_auth)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if p not in ('query', 'path', 'body'))}: "
            f"{err['msg']}"
            for err in exc.errors()
        )
        return JSONResponse({"detail": reasons}, status_code=422)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"redis unavailable: {exc}"}, status_code=503)

    def find(ref: str) -> Watch:
        found = store.find(ref)
        if found is None:
            raise HTTPException(404, f"no watch {ref!r}")
        return found

    # watches

    @app.get("/v1/watches", dependencies=reads, response_model=schemas.WatchPage,
             responses=errors(401, 422, 503), tags=["watches"])  # fmt: skip
    def list_watches(
        state: State | None = None,
        provider: str | None = None,
        label: Annotated[list[str], Query(description="key=value, repeatable")] = [],  # noqa: B006 FastAPI copies defaults
        q: Annotated[str | None, Query(description="substring of id, remote id or name")] = None,
        created_after: Annotated[float | None, Query(description="unix seconds, inclusive")] = None,
        created_before: Annotated[
            float | None, Query(description="unix seconds, exclusive")
        ] = None,
        updated_after: float | None = None,
        updated_before: float | None = None,
        sort: Literal[SORTS] = "-created_at",  # type: ignore[valid-type]
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Watches, filtered and sorted, a page at a time."""
        labels: dict[str, str] = {}
        for pair in label:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise HTTPException(422, f"label: {pair!r} is not key=value")
            if labels.setdefault(key, value) != value:
                raise HTTPException(422, f"label: {key!r} given twice")
        try:
            items, next_cursor = store.list_watches(
                state=state, provider=provider, labels=labels, q=q or None,
                created_after=created_after, created_before=created_before,
                updated_after=updated_after, updated_before=updated_before, sort=sort,
                limit=limit, cursor=cursor,
            )  # fmt: skip
        except BadQuery as exc:
            raise HTTPException(422, str(exc)) from None
        return {"items": items, "next_cursor": next_cursor}

    @app.get("/v1/watches/{ref}", dependencies=reads, response_model=schemas.WatchDetail,
             responses=errors(401, 404, 503), tags=["watches"])  # fmt: skip
    def get_watch(ref: str) -> dict[str, Any]:
        """One watch (by id, or ``provider:remote_id``), with its history and archived outputs."""
        watch = find(ref)
        return {**watch.to_dict(), "history": store.history(watch.id)}

    @app.post(
        "/v1/watches", dependencies=writes, status_code=201, response_model=schemas.Registered,
        responses={200: {"model": schemas.Registered, "description": "Already watched"},
                   **errors(401, 422, 503)},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Registration"}}}}},
        tags=["watches"],
    )  # fmt: skip
    async def register(request: Request, response: Response) -> dict[str, Any]:
        """Watch a remote task: the same validation and idempotency as the queue message."""
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(422, "body: not JSON") from None
        try:
            watch, created = await run_in_threadpool(
                service.register, store, settings, data, source="api"
            )
        except InvalidRegistration as exc:
            raise HTTPException(422, str(exc)) from None
        if not created:
            response.status_code = 200
        return {"watch": watch, "created": created}

    @app.post("/v1/watches/{ref}/cancel", dependencies=writes, response_model=schemas.Cancelled,
              responses=errors(401, 404, 422, 503), tags=["watches"])  # fmt: skip
    def cancel(ref: str, body: schemas.CancelRequest | None = None) -> dict[str, Any]:
        """Stop watching; with ``abort``, also ask the platform to abort the task."""
        watch = find(ref)
        cancelled = store.cancel(watch.id, time.time(), "cancelled through the API")
        if body is not None and body.abort:
            producer.send_task(keys.TASK_ABORT, args=[watch.id], queue=keys.QUEUE_POLL)
        return {"watch": find(watch.id), "cancelled": bool(cancelled)}

    @app.post("/v1/watches/{ref}/retry", dependencies=writes, response_model=schemas.Rearmed,
              responses=errors(401, 404, 409, 503), tags=["watches"])  # fmt: skip
    def retry(ref: str) -> dict[str, Any]:
        """Re-arm an ``error`` or ``timed_out`` watch: it is checked again at once."""
        watch = find(ref)
        try:
            again = store.rearm(watch.id, time.time())
        except NotRearmable as exc:
            raise HTTPException(409, str(exc)) from None
        if again is None:
            raise HTTPException(404, f"no watch {ref!r}")
        return {"watch": again}

    # operations

    @app.get("/v1/stats", dependencies=reads, response_model=schemas.Stats,
             responses=errors(401, 503), tags=["operations"])  # fmt: skip
    def stats() -> dict[str, Any]:
        """Counts by state and provider, dispatch lag, recent poll and error rates, workers."""
        now = time.time()
        rates = _recent_rates(store, now)
        zero = {"polls_per_s": 0.0, "errors_per_s": 0.0, "rate_limit_waits_per_s": 0.0}
        queues = store.worker_queues()
        return {
            "counts": store.counts(),
            "providers": {
                name: {"counts": counts, **zero, **rates.get(name, {})}
                for name, counts in store.counts_by_provider().items()
            },
            "dispatch_lag_seconds": store.dispatch_lag(now),
            "workers": {
                node: {
                    "last_seen": at,
                    "age_seconds": max(0.0, now - at),
                    "queues": queues.get(node),
                }
                for node, at in store.worker_heartbeats().items()
            },
        }

    @app.get(
        "/v1/events", dependencies=reads, response_class=StreamingResponse,
        responses={200: {"description": "Server-sent events: `id: <stream id>`, "
                         "`event: transition`, `data: <JSON>`; a comment every 15 s",
                         "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                   **errors(401, 422)},
        tags=["operations"],
    )  # fmt: skip
    async def follow(
        request: Request,
        after: Annotated[str | None, Query(description="stream id; default: only new")] = None,
    ) -> StreamingResponse:
        """Every transition as it happens; resumes after ``Last-Event-ID`` (or ``after``)."""
        start = request.headers.get("last-event-id") or after or "$"
        if not events.valid_id(start):
            raise HTTPException(422, f"after: {start!r} is not a stream id (like 1700000000000-0)")
        return StreamingResponse(
            events.transitions(redis_url, start, sse_heartbeat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/healthz", response_model=schemas.Health, tags=["operations"])
    def healthz() -> dict[str, bool]:
        """The process is up."""
        return {"ok": True}

    @app.get("/readyz", response_model=schemas.Readiness, tags=["operations"],
             responses={503: {"model": schemas.Readiness, "description": "Not ready"}})  # fmt: skip
    def readyz(response: Response) -> dict[str, Any]:
        """Redis, broker and archive reachable; beat and workers alive; dispatch keeping up."""
        results = readiness.run()
        ready = all(ok for ok, _ in results.values())
        response.status_code = 200 if ready else 503
        checks = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()}
        return {"ready": ready, "checks": checks}

    @app.get(
        "/metrics", dependencies=reads, tags=["operations"], response_class=Response,
        responses={200: {"description": "Prometheus text format",
                         "content": {"text/plain": {"schema": {"type": "string"}}}},
                   **errors(401), 503: {"model": schemas.Error, "description": "Unavailable"}},
    )  # fmt: skip
    def metrics() -> Response:
        """Prometheus metrics, summed over every worker process."""
        try:
            from taskwarden.metrics import exposition
        except ImportError:
            return JSONResponse({"detail": "metrics not available"}, status_code=503)
        body, content_type = exposition(
            store.metric_cells(), store.counts(), store.dispatch_lag(time.time())
        )
        return Response(body, media_type=content_type)

    # the dashboard

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> Response:
        return _web_file("dashboard.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if not STATIC_NAME.fullmatch(name) or not name.endswith(STATIC_TYPES):
            return Response("not found", status_code=404, media_type="text/plain")
        return _web_file(name)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 routes=app.routes)  # fmt: skip
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            reg = Registration.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(reg.pop("$defs", {}))
            components["Registration"] = reg
            _errors_as_sent(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _errors_as_sent(schema: dict[str, Any]) -> None:
    """FastAPI documents its own 422 shape; ours is ``Error`` (one sentence), and a route whose
    only input is a string in its path cannot fail validation at all."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            if "422" not in responses:
                continue
            params = operation.get("parameters", [])
            if "requestBody" not in operation and all(p["in"] == "path" for p in params):
                del responses["422"]
            else:
                responses["422"] = {
                    "description": "Invalid input; `detail` says what and why",
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}},
                }  # fmt: skip
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


def _recent_rates(store: Store, now: float) -> dict[str, dict[str, float]]:
    try:
        from taskwarden.metrics import recent_rates, recent_window
    except ImportError:
        return {}
    return recent_rates(store.recent_cells(recent_window(now)), now)


def _web_file(name: str) -> Response:
    try:
        data = (importlib.resources.files(WEB_PACKAGE) / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, ModuleNotFoundError, NotADirectoryError):
        return Response("not found", status_code=404, media_type="text/plain")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})
