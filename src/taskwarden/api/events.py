"""``GET /v1/events``: the transitions stream as server-sent events.

Each connection follows the stream with its own
:class:`~taskwarden.store.events.EventFollower` (a blocking XREAD holds a connection, so it must
not hold one of the request threads), from the id the client last saw (``Last-Event-ID`` or
``?after=``), and sends a comment line when nothing happened for ``heartbeat`` seconds so that
proxies and clients know the connection is alive.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from taskwarden.store import EventFollower

# "$" (only new ones) or <ms>[-<seq>]: 19 digits at most, so that Redis takes every id it matches
STREAM_ID_PATTERN = "^([$]|[0-9]{1,19}(-[0-9]{1,19})?)$"
STREAM_ID = re.compile(STREAM_ID_PATTERN)
BATCH = 100


def valid_id(value: str) -> bool:
    return STREAM_ID.fullmatch(value) is not None


async def transitions(redis_url: str, after: str, heartbeat: float) -> AsyncIterator[str]:
    """SSE frames: every transition after stream id ``after`` ("$": only new ones), forever."""
    follower = EventFollower(redis_url, heartbeat)
    try:
        if after == "$":
            after = await follower.newest_id()
        yield ": connected\n\n"
        while True:
            batch = await follower.read(after, BATCH)
            if not batch:
                yield ": heartbeat\n\n"
                continue
            for entry_id, fields in batch:
                after = entry_id
                data = json.dumps(fields, separators=(",", ":"))
                yield f"id: {entry_id}\nevent: transition\ndata: {data}\n\n"
    finally:
        await follower.aclose()
