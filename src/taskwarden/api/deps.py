"""What the routes share, and the dependencies that hand it to them.

:func:`~taskwarden.api.app.create_app` builds one :class:`Context` per app (settings, the store,
the Celery producer, the readiness checks, the API token) and keeps it on ``app.state``; a
route takes what it needs with :data:`StoreDep`, :data:`SettingsDep` or :data:`ContextDep`,
and declares who may call it with :data:`READS` or :data:`WRITES`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, cast

from celery import Celery
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taskwarden.api.health import Readiness
from taskwarden.config import Settings
from taskwarden.models import Watch
from taskwarden.store import Store


@dataclass(frozen=True)
class Context:
    """One app's collaborators, built once by ``create_app``."""

    settings: Settings
    store: Store
    producer: Celery  # sends tasks (abort), never consumes
    readiness: Readiness
    token: bytes  # the API token writes need (reads too, with TASKWARDEN_API__READ_AUTH)
    redis_url: str  # each server-sent events connection opens its own
    sse_heartbeat: float  # seconds of silence before an events stream sends a comment


# async, though they wait for nothing: a sync dependency would cost a trip to a worker thread


async def context(request: Request) -> Context:
    return cast(Context, request.app.state.context)


ContextDep = Annotated[Context, Depends(context)]


async def _store(ctx: ContextDep) -> Store:
    return ctx.store


async def _settings(ctx: ContextDep) -> Settings:
    return ctx.settings


StoreDep = Annotated[Store, Depends(_store)]
SettingsDep = Annotated[Settings, Depends(_settings)]

bearer = HTTPBearer(auto_error=False, description="The API token (TASKWARDEN_API__TOKEN)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _authorized(token: bytes, credentials: HTTPAuthorizationCredentials | None) -> None:
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, token):
        raise HTTPException(
            401,
            "missing bearer token" if credentials is None else "wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def write_auth(ctx: ContextDep, credentials: Credentials) -> None:
    """Writes always need the bearer token."""
    _authorized(ctx.token, credentials)


async def read_auth(ctx: ContextDep, credentials: Credentials) -> None:
    """Reads need it when ``TASKWARDEN_API__READ_AUTH`` is on."""
    if ctx.settings.api.read_auth:
        _authorized(ctx.token, credentials)


READS = [Depends(read_auth)]
WRITES = [Depends(write_auth)]


def find(store: Store, ref: str) -> Watch:
    """The watch ``ref`` names (its id, or ``provider:remote_id``), or a 404."""
    found = store.find(ref)
    if found is None:
        raise HTTPException(404, f"no watch {ref!r}")
    return found
