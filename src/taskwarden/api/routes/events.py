"""``GET /v1/events``: every transition as it happens, as server-sent events
(:mod:`taskwarden.api.events` makes the frames)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from taskwarden.api import events
from taskwarden.api.deps import READS, ContextDep
from taskwarden.api.schemas import errors

router = APIRouter(tags=["operations"])


@router.get(
    "/v1/events", dependencies=READS, response_class=StreamingResponse,
    responses={200: {"description": "Server-sent events: `id: <stream id>`, "
                     "`event: transition`, `data: <JSON>`; a comment every 15 s",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}},
               **errors(401, 422)},
)  # fmt: skip
async def follow(
    ctx: ContextDep,
    request: Request,
    after: Annotated[str | None, Query(description="stream id; default: only new")] = None,
) -> StreamingResponse:
    """Every transition as it happens; resumes after ``Last-Event-ID`` (or ``after``)."""
    start = request.headers.get("last-event-id") or after or "$"
    if not events.valid_id(start):
        raise HTTPException(422, f"after: {start!r} is not a stream id (like 1700000000000-0)")
    return StreamingResponse(
        events.transitions(ctx.redis_url, start, ctx.sse_heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
