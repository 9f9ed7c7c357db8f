"""The HTTP API: read watches and stats, register, cancel and re-arm, follow transitions.

It reads the store and enqueues work; it never polls a platform nor downloads an output.
Writes need ``Authorization: Bearer <token>`` (:mod:`taskwarden.api_token`); reads too when
``TASKWARDEN_API__READ_AUTH`` is on. Health, readiness, the dashboard and its files are open.

:func:`create_app` builds what the routes share (:class:`~taskwarden.api.deps.Context`) and
assembles the routers of :mod:`taskwarden.api.routes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from taskwarden import api_token
from taskwarden.api.access import AccessLog
from taskwarden.api.deps import Context
from taskwarden.api.health import Readiness
from taskwarden.api.routes import ROUTERS
from taskwarden.config import Settings
from taskwarden.models import Registration
from taskwarden.store import Store, StoreError

SSE_HEARTBEAT = 15.0


def create_app(
    settings: Settings, redis_url: str, *, sse_heartbeat: float = SSE_HEARTBEAT
) -> FastAPI:
    """The API app for a resolved Redis URL (the embedded server's, if any)."""
    store = Store.from_url(redis_url, connect_timeout=5, timeout=30, **settings.store_options())
    producer = Celery("taskwarden-api", broker=redis_url, set_as_current=False)
    producer.conf.update(task_serializer="json", broker_connection_retry_on_startup=False)
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
    for router in ROUTERS:
        app.include_router(router)

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
