"""``GET /v1/events``: the transitions stream as server-sent events.

Each connection follows the stream with its own
:class:`~taskwarden.store.events.EventFollower` (a blocking XREAD holds a connection, so it must
not hold one of the request threads), from the id the client last saw (``Last-Event-ID`` or
``?after=``), and sends a comment line when nothing happened for ``heartbeat`` seconds so that
proxies and clients know the connection is alive. A Redis that stops answering (a restart, a
failover) is waited out: the stream sends a ``: redis unavailable`` comment, retries with a
doubling pause up to ``OUTAGE_BACKOFF_MAX`` seconds, and goes on from the last id it sent.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from taskwarden import logs
from taskwarden.store import UNREACHABLE, EventFollower

log = logs.get("taskwarden.api.events")

# "$" (only new ones) or <ms>[-<seq>]: 19 digits at most, so that Redis takes every id it matches
STREAM_ID_PATTERN = "^([$]|[0-9]{1,19}(-[0-9]{1,19})?)$"
STREAM_ID = re.compile(STREAM_ID_PATTERN)
BATCH = 100
OUTAGE_BACKOFF_MAX = 10.0  # seconds between two tries to reach a Redis that stopped answering


def valid_id(value: str) -> bool:
    return STREAM_ID.fullmatch(value) is not None


async def transitions(redis_url: str, after: str, heartbeat: float) -> AsyncIterator[str]:
    """SSE frames: every transition after stream id ``after`` ("$": only new ones), forever."""
    follower = EventFollower(redis_url, heartbeat)
    failures = 0
    connected = False
    try:
        while True:
            try:
                if after == "$":  # pinned before ": connected": nothing after it is missed
                    after = await follower.newest_id()
                if not connected:
                    connected = True
                    yield ": connected\n\n"
                batch = await follower.read(after, BATCH)
            except UNREACHABLE as exc:
                failures += 1
                if failures == 1:
                    log.warning("events.redis_unavailable", error=str(exc))
                yield ": redis unavailable, retrying\n\n"
                await asyncio.sleep(min(OUTAGE_BACKOFF_MAX, 0.5 * 2 ** min(failures - 1, 10)))
                continue
            if failures:
                log.info("events.redis_back", failures=failures)
                failures = 0
            if not batch:
                yield ": heartbeat\n\n"
                continue
            for entry_id, fields in batch:
                after = entry_id
                data = json.dumps(fields, separators=(",", ":"))
                yield f"id: {entry_id}\nevent: transition\ndata: {data}\n\n"
    finally:
        await follower.aclose()
