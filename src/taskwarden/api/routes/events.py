"""``GET /v1/events``: every transition as it happens, as server-sent events
(:mod:`taskwarden.api.events` makes the frames)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

from taskwarden.api import events
from taskwarden.api.deps import READS, ContextDep
from taskwarden.api.schemas import errors

router = APIRouter(tags=["operations"])

STREAM_ID = {"pattern": events.STREAM_ID_PATTERN}  # documented; checked with a clearer message
_TEXT = {"type": "string"}
FIELDS = ("watch_id", "provider", "remote_id", "from", "to", "raw", "progress", "note", "at")
# each event of the stream (OpenAPI 3.1: the schema of a text/event-stream is one event's)
TRANSITION_EVENT = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": events.STREAM_ID_PATTERN},
        "event": {"const": "transition"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "description": "The stream entry's fields, as text; an empty one was unset",
                "required": ["watch_id", "provider", "remote_id", "from", "to", "at"],
                "properties": {name: _TEXT for name in FIELDS},
                "additionalProperties": _TEXT,
            },
        },
    },
}


@router.get(
    "/v1/events", dependencies=READS, response_class=StreamingResponse,
    responses={200: {"description": "Server-sent events: `id: <stream id>`, "
                     "`event: transition`, `data: <JSON>`; a comment every 15 s",
                     "content": {"text/event-stream": {"schema": TRANSITION_EVENT}}},
               **errors(401, 422)},
)  # fmt: skip
async def follow(
    ctx: ContextDep,
    after: Annotated[
        str | None, Query(description="stream id; default: only new", json_schema_extra=STREAM_ID)
    ] = None,
    last_event_id: Annotated[
        str | None, Header(description="stream id, over `after`", json_schema_extra=STREAM_ID)
    ] = None,
) -> StreamingResponse:
    """Every transition as it happens; resumes after ``Last-Event-ID`` (or ``after``)."""
    for name, given in (("after", after), ("Last-Event-ID", last_event_id)):
        if given is not None and not events.valid_id(given):
            raise HTTPException(422, f"{name}: {given!r} is not a stream id (like 1700000000000-0)")
    start = last_event_id or after or "$"
    return StreamingResponse(
        events.transitions(ctx.redis_url, start, ctx.sse_heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
