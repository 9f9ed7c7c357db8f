"""``GET /v1/events``: the transitions stream as server-sent events.

Each connection reads the Redis stream with its own asyncio client (a blocking XREAD holds a
connection, so it must not hold one of the request threads), from the id the client last saw
(``Last-Event-ID`` or ``?after=``), and sends a comment line when nothing happened for
``heartbeat`` seconds so that proxies and clients know the connection is alive.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio

from taskwarden import keys

STREAM_ID = re.compile(r"\$|\d{1,20}(-\d{1,20})?")
BATCH = 100


def valid_id(value: str) -> bool:
    return STREAM_ID.fullmatch(value) is not None


async def transitions(redis_url: str, after: str, heartbeat: float) -> AsyncIterator[str]:
    """SSE frames: every transition after stream id ``after`` ("$": only new ones), forever."""
    # XREAD blocks for ``heartbeat`` seconds: the socket must wait longer than that (redis-py's
    # default read timeout, 5 s, broke every idle stream under the 15 s heartbeat)
    client = redis.asyncio.Redis.from_url(
        redis_url, decode_responses=True, socket_timeout=heartbeat + 10
    )
    try:
        if after == "$":
            # pin "now" to an id, so that nothing is missed between two reads
            last: Any = await client.xrevrange(keys.EVENTS, count=1)
            after = last[0][0] if last else "0-0"
        yield ": connected\n\n"
        while True:
            got: Any = await client.xread(
                {keys.EVENTS: after}, count=BATCH, block=max(1, int(heartbeat * 1000))
            )
            if not got:
                yield ": heartbeat\n\n"
                continue
            for entry_id, fields in got[0][1]:
                after = entry_id
                data = json.dumps(fields, separators=(",", ":"))
                yield f"id: {entry_id}\nevent: transition\ndata: {data}\n\n"
    finally:
        await client.aclose()
