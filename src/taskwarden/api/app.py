"""The HTTP API: read watches and stats, register, cancel and re-arm, follow transitions.

It reads the store and enqueues work; it never polls a platform nor downloads an output.
Writes need ``Authorization: Bearer <token>`` (:mod:`taskwarden.api_token`); reads too when
``TASKWARDEN_API__READ_AUTH`` is on. Health, readiness, the dashboard and its files are open.

:func:`create_app` builds what the routes share (:class:`~taskwarden.api.deps.Context`) and
assembles the routers of :mod:`taskwarden.api.routes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter
from starlette.exceptions import HTTPException

from taskwarden import api_token
from taskwarden.api.access import AccessLog
from taskwarden.api.deps import Context
from taskwarden.api.health import Readiness
from taskwarden.api.openapi import document
from taskwarden.api.routes import ROUTERS
from taskwarden.config import Settings
from taskwarden.config.redis_url import celery_broker
from taskwarden.store import Store, StoreError

SSE_HEARTBEAT = 15.0


def create_app(
    settings: Settings, redis_url: str, *, sse_heartbeat: float = SSE_HEARTBEAT
) -> FastAPI:
    """The API app for a resolved Redis URL (the embedded server's, if any)."""
    store = Store.from_url(redis_url, connect_timeout=5, timeout=30, **settings.store_options())
    broker, transport_options = celery_broker(redis_url)
    producer = Celery("taskwarden-api", broker=broker, set_as_current=False)
    producer.conf.update(
        task_serializer="json",
        broker_connection_retry_on_startup=False,
        broker_transport_options=transport_options,
    )
    context = Context(
        settings=settings,
        store=store,
        producer=producer,
        readiness=Readiness(settings, store, producer),
        token=api_token.load_or_create(settings).encode(),
        redis_url=redis_url,
        sse_heartbeat=sse_heartbeat,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        context.readiness.close()
        store.close()

    app = FastAPI(
        title="taskwarden",
        version="1",
        summary="Watches long-running tasks on remote platforms and archives their outputs.",
        lifespan=lifespan,
    )
    app.state.context = context
    app.add_middleware(AccessLog)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StoreError, _redis_down)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _allowing(ROUTERS))  # type: ignore[arg-type]
    for router in ROUTERS:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, settings, ROUTERS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    """A request FastAPI could not validate: one sentence, like every other error."""
    reasons = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'] if p not in ('query', 'path', 'body'))}: "
        f"{err['msg']}"
        for err in exc.errors()
    )
    return JSONResponse({"detail": reasons}, status_code=422)


async def _redis_down(_: Request, exc: StoreError) -> JSONResponse:
    """The store could not be reached (the store's errors are redis-py's own)."""
    return JSONResponse({"detail": f"redis unavailable: {exc}"}, status_code=503)


def _allowing(
    routers: Iterable[APIRouter],
) -> Callable[[Request, HTTPException], Awaitable[Response]]:
    """FastAPI's answer to an HTTP error, except that a 405's ``Allow`` names every method of
    the path (Starlette's names only those of the first route whose path matched)."""
    routes = [(r.path_regex, r.methods or set()) for router in routers for r in router.routes
              if isinstance(r, APIRoute)]  # fmt: skip

    async def handle(request: Request, exc: HTTPException) -> Response:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        path = request.scope["path"]
        allowed = sorted({m for regex, methods in routes if regex.match(path) for m in methods})
        return JSONResponse({"detail": exc.detail}, 405, headers={"Allow": ", ".join(allowed)})

    return handle
