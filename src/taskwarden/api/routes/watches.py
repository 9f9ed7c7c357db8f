"""``/v1/watches``: list and read watches; register, cancel, re-arm and forget them, one at a
time or (``:cancel``, ``:retry``) all that a filter matches."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from taskwarden import keys, service
from taskwarden.api import schemas
from taskwarden.api.deps import READS, WRITES, ContextDep, SettingsDep, StoreDep, find
from taskwarden.api.schemas import errors
from taskwarden.errors import InvalidRegistration
from taskwarden.lifecycle import State
from taskwarden.service import bulk
from taskwarden.store import SORTS, BadQuery, NotRearmable, Store

router = APIRouter(tags=["watches"])


@router.get("/v1/watches", dependencies=READS, response_model=schemas.WatchPage,
            responses=errors(401, 422, 503))  # fmt: skip
def list_watches(
    store: StoreDep,
    state: State | None = None,
    provider: str | None = None,
    label: Annotated[list[str], Query(description="key=value, repeatable")] = [],  # noqa: B006 FastAPI copies defaults
    q: Annotated[str | None, Query(description="substring of id, remote id or name")] = None,
    created_after: Annotated[float | None, Query(description="unix seconds, inclusive")] = None,
    created_before: Annotated[float | None, Query(description="unix seconds, exclusive")] = None,
    updated_after: float | None = None,
    updated_before: float | None = None,
    sort: Literal[SORTS] = "-created_at",  # type: ignore[valid-type]
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Watches, filtered and sorted, a page at a time."""
    labels = _labels(label)
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


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HTTPException(422, f"label: {pair!r} is not key=value")
        if labels.setdefault(key, value) != value:
            raise HTTPException(422, f"label: {key!r} given twice")
    return labels


def _bulk(
    store: Store, action: bulk.Action, body: schemas.BulkRequest,
    on_cancelled: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    selection = service.Selection(
        state=body.state, provider=body.provider, labels=_labels(body.label), q=body.q or None,
        created_after=body.created_after, created_before=body.created_before,
        updated_after=body.updated_after, updated_before=body.updated_before,
    )  # fmt: skip
    try:
        done = bulk.apply(
            store, action, selection, now=time.time(), limit=body.limit, cursor=body.cursor,
            dry_run=body.dry_run, on_cancelled=on_cancelled,
            note="cancelled in bulk through the API",
        )  # fmt: skip
    except BadQuery as exc:
        raise HTTPException(422, str(exc)) from None
    return asdict(done)


@router.post("/v1/watches:cancel", dependencies=WRITES, response_model=schemas.BulkResult,
             responses=errors(401, 422, 503))  # fmt: skip
def cancel_many(ctx: ContextDep, body: schemas.BulkCancelRequest) -> dict[str, Any]:
    """Cancel the watches a filter matches, ``limit`` at a time (go on with ``next_cursor``);
    with ``abort``, also abort the remote task of each one cancelled. Those already ended are
    skipped, so a repeated request changes nothing."""

    def send_abort(wid: str) -> None:
        ctx.producer.send_task(keys.TASK_ABORT, args=[wid], queue=keys.QUEUE_POLL)

    return _bulk(ctx.store, "cancel", body, send_abort if body.abort else None)


@router.post("/v1/watches:retry", dependencies=WRITES, response_model=schemas.BulkResult,
             responses=errors(401, 422, 503))  # fmt: skip
def retry_many(store: StoreDep, body: schemas.BulkRequest) -> dict[str, Any]:
    """Re-arm the ``error`` and ``timed_out`` watches a filter matches, ``limit`` at a time (go
    on with ``next_cursor``); the others it matches are skipped, by state."""
    return _bulk(store, "retry", body)


@router.get("/v1/watches/{ref}", dependencies=READS, response_model=schemas.WatchDetail,
            responses=errors(401, 404, 503))  # fmt: skip
def get_watch(store: StoreDep, ref: str) -> dict[str, Any]:
    """One watch (by id, or ``provider:remote_id``), with its history and archived outputs."""
    watch = find(store, ref)
    return {**watch.to_dict(), "history": store.history(watch.id)}


@router.post(
    "/v1/watches", dependencies=WRITES, status_code=201, response_model=schemas.Registered,
    responses={200: {"model": schemas.Registered, "description": "Already watched"},
               **errors(401, 422, 503)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Registration"}}}}},
)  # fmt: skip
async def register(
    store: StoreDep, settings: SettingsDep, request: Request, response: Response
) -> dict[str, Any]:
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


@router.post("/v1/watches/{ref}/cancel", dependencies=WRITES, response_model=schemas.Cancelled,
             responses=errors(401, 404, 409, 422, 503))  # fmt: skip
def cancel(ctx: ContextDep, ref: str, body: schemas.CancelRequest | None = None) -> dict[str, Any]:
    """Stop watching; with ``abort``, also ask the platform to abort the task. An abort of a
    watch that had already ended is refused (409) and nothing is sent."""
    watch = find(ctx.store, ref)
    cancelled = ctx.store.cancel(watch.id, time.time(), "cancelled through the API")
    if body is not None and body.abort:
        if not cancelled:
            ended = find(ctx.store, watch.id)
            raise HTTPException(409, f"watch {watch.id} had already ended ({ended.state}); "
                                     "no abort was sent")  # fmt: skip
        ctx.producer.send_task(keys.TASK_ABORT, args=[watch.id], queue=keys.QUEUE_POLL)
    return {"watch": find(ctx.store, watch.id), "cancelled": bool(cancelled)}


@router.post("/v1/watches/{ref}/retry", dependencies=WRITES, response_model=schemas.Rearmed,
             responses=errors(401, 404, 409, 503))  # fmt: skip
def retry(store: StoreDep, ref: str) -> dict[str, Any]:
    """Re-arm an ``error`` or ``timed_out`` watch: it is checked again at once."""
    watch = find(store, ref)
    try:
        again = store.rearm(watch.id, time.time())
    except NotRearmable as exc:
        raise HTTPException(409, str(exc)) from None
    if again is None:
        raise HTTPException(404, f"no watch {ref!r}")
    return {"watch": again}


@router.delete("/v1/watches/{ref}", dependencies=WRITES, response_model=schemas.Forgotten,
               responses=errors(401, 404, 409, 422, 503))  # fmt: skip
def forget(
    store: StoreDep,
    ref: str,
    force: Annotated[bool, Query(description="also a watch that is not final")] = False,
) -> dict[str, Any]:
    """Remove a watch from Redis now, with its history and index entries, whatever its
    retention (its archive stays). A watch that is not final is refused (409) unless
    ``force``: then it is dropped as it is, its checks in flight write nothing, and the remote
    task is left alone (cancel it with ``abort`` first to stop it too)."""
    watch = find(store, ref)
    done = store.forget(watch.id, force=force)
    if not done.found:
        raise HTTPException(404, f"no watch {ref!r}")
    if not done.removed:
        raise HTTPException(
            409, f"watch {watch.id} is {done.state}, not final; cancel it first or pass force=true"
        )
    return {"id": watch.id, "state": str(watch.state)}
