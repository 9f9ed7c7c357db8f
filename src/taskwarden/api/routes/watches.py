"""``/v1/watches``: list and read watches; register, cancel, re-arm and forget them, one at a
time or (``:cancel``, ``:retry``) all that a filter matches."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from taskwarden import keys, service
from taskwarden.api import schemas
from taskwarden.api.deps import READS, WRITES, ContextDep, SettingsDep, StoreDep, find
from taskwarden.api.schemas import LABEL_FILTER, errors
from taskwarden.errors import InvalidRegistration
from taskwarden.lifecycle import State
from taskwarden.models import reasons
from taskwarden.service import bulk
from taskwarden.store import SORTS, BadQuery, NotRearmable, Store

router = APIRouter(tags=["watches"])
M = TypeVar("M", bound=BaseModel)

__all__ = ["LABEL_FILTER", "router"]


@router.get("/v1/watches", dependencies=READS, response_model=schemas.WatchPage,
            responses=errors(401, 422, 503))  # fmt: skip
def list_watches(
    store: StoreDep,
    state: State | None = None,
    provider: str | None = None,
    label: Annotated[
        list[str], Query(description="key=value, repeatable: watches with all of these labels")
    ] = [],  # noqa: B006 FastAPI copies defaults
    q: Annotated[str | None, Query(description="substring of id, remote id or name")] = None,
    created_after: Annotated[float | None, Query(description="unix seconds, inclusive")] = None,
    created_before: Annotated[float | None, Query(description="unix seconds, exclusive")] = None,
    updated_after: float | None = None,
    updated_before: float | None = None,
    sort: Literal[SORTS] = "-created_at",  # type: ignore[valid-type]
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(description="the `next_cursor` of the page before, with the same filters and sort"),
    ] = None,
) -> dict[str, Any]:
    """Watches, filtered and sorted, a page at a time."""
    labels = _labels(label)
    if labels is None:
        return {"items": [], "next_cursor": None}
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


def _labels(pairs: list[str]) -> dict[str, str] | None:
    """The ``key=value`` filters as a dict; None when one key is given two values (no watch
    has both: the schema cannot forbid a repeated key, so it is no error)."""
    labels: dict[str, str] = {}
    contradict = False
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HTTPException(422, f"label: {pair!r} is not key=value")
        contradict |= labels.setdefault(key, value) != value
    return None if contradict else labels


def _bulk(
    store: Store, action: bulk.Action, body: schemas.BulkRequest,
    on_cancelled: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    labels = _labels(body.label)
    if labels is None:
        return asdict(bulk.BulkResult(dry_run=body.dry_run))
    selection = service.Selection(
        state=body.state, provider=body.provider, labels=labels, q=body.q or None,
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


@router.post(
    "/v1/watches:cancel", dependencies=WRITES, response_model=schemas.BulkResult,
    responses=errors(401, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/BulkCancelRequest"}}}}},
)  # fmt: skip
def cancel_many(
    ctx: ContextDep, body: Annotated[schemas.BulkCancelRequest, Depends(bulk_cancel_request)]
) -> dict[str, Any]:
    """Cancel the watches a filter matches, ``limit`` at a time (go on with ``next_cursor``);
    with ``abort``, also abort the remote task of each one cancelled. Those already ended are
    skipped, so a repeated request changes nothing."""

    def send_abort(wid: str) -> None:
        ctx.producer.send_task(keys.TASK_ABORT, args=[wid], queue=keys.QUEUE_POLL)

    return _bulk(ctx.store, "cancel", body, send_abort if body.abort else None)


@router.post(
    "/v1/watches:retry", dependencies=WRITES, response_model=schemas.BulkResult,
    responses=errors(401, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/BulkRequest"}}}}},
)  # fmt: skip
def retry_many(
    store: StoreDep, body: Annotated[schemas.BulkRequest, Depends(bulk_request)]
) -> dict[str, Any]:
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


@router.post(
    "/v1/watches:batch", dependencies=WRITES, response_model=schemas.BatchRegistered,
    response_model_exclude_none=True, responses=errors(401, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "array", "maxItems": service.MAX_BATCH, "items": {
            "description": "a registration (the Registration schema), validated on its own: "
                           "one that is not valid is refused at its index, never the batch"}}}}}},
)  # fmt: skip
async def register_batch(
    store: StoreDep, settings: SettingsDep, request: Request
) -> dict[str, Any]:
    """Watch many remote tasks at once (at most 1000): each item is validated, refused (and
    dead-lettered) or registered on its own, and answered at its index."""
    try:
        data = await request.json()
    except ValueError:
        raise HTTPException(422, "body: not JSON") from None
    if not isinstance(data, list):
        raise HTTPException(422, "body: a JSON array of registrations")
    if len(data) > service.MAX_BATCH:
        raise HTTPException(
            422, f"body: {len(data)} registrations; at most {service.MAX_BATCH} per batch"
        )
    outcomes = await run_in_threadpool(service.register_many, store, settings, data, source="api")
    return {**service.tally(outcomes), "results": [o.to_dict() for o in outcomes]}


async def _json_body(request: Request) -> object:
    """The request's JSON body (None when empty); one that is not JSON is a 422 like every other
    invalid input (FastAPI answers 400)."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise HTTPException(422, "body: not JSON") from None


async def cancel_request(request: Request) -> schemas.CancelRequest:
    """The optional body of a cancel, validated strictly (``"abort": 1`` is not a boolean)."""
    data = await _json_body(request)
    if data is None:
        return schemas.CancelRequest()
    try:
        return schemas.CancelRequest.model_validate(data, strict=True)
    except ValidationError as exc:
        raise HTTPException(422, reasons(exc)) from None


async def _strict(request: Request, model: type[M]) -> M:
    """A required JSON body as ``model``, validated strictly as JSON (as the schema says: no
    ``"1"`` for a number, no ``0`` for a boolean); missing or not JSON is a 422."""
    if await _json_body(request) is None:
        raise HTTPException(422, "body: a JSON object is required")
    try:
        return model.model_validate_json(await request.body(), strict=True)
    except ValidationError as exc:
        raise HTTPException(422, reasons(exc)) from None


async def bulk_request(request: Request) -> schemas.BulkRequest:
    """The body of a bulk retry."""
    return await _strict(request, schemas.BulkRequest)


async def bulk_cancel_request(request: Request) -> schemas.BulkCancelRequest:
    """The body of a bulk cancel."""
    return await _strict(request, schemas.BulkCancelRequest)


@router.post(
    "/v1/watches/{ref}/cancel", dependencies=WRITES, response_model=schemas.Cancelled,
    responses=errors(401, 404, 409, 422, 503),
    openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
        "schema": {"anyOf": [{"$ref": "#/components/schemas/CancelRequest"},
                             {"type": "null"}]}}}}},
)  # fmt: skip
def cancel(
    ctx: ContextDep, ref: str, body: Annotated[schemas.CancelRequest, Depends(cancel_request)]
) -> dict[str, Any]:
    """Stop watching; with ``abort``, also ask the platform to abort the task. An abort of a
    watch that had already ended is refused (409) and nothing is sent."""
    watch = find(ctx.store, ref)
    cancelled = ctx.store.cancel(watch.id, time.time(), "cancelled through the API")
    if body.abort:
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
