"""Reading the ``events`` stream: one entry per state transition (fields: watch_id, provider,
remote_id, from, to, raw, progress, note, at), written by the store's scripts in the same step
as the change, capped at about ``MAX_EVENTS`` entries.

:class:`StoreEvents` (mixed into :class:`~taskwarden.store.Store`) reads it for
``taskwarden events``; :class:`EventFollower` follows it from an asyncio task (the API's
server-sent events). The webhook pump's consumer group on the same stream is
:mod:`taskwarden.store.webhooks`'.
"""

from __future__ import annotations

from typing import Any, cast

from redis import Redis

from taskwarden import keys
from taskwarden.store import connection

Entries = list[tuple[str, dict[str, str]]]


def _entries(got: Any) -> Entries:
    """The entries of an XREAD answer on the events stream (RESP2 or RESP3), oldest first."""
    if not got:
        return []
    entries = got[0][1] if isinstance(got, list) else got[keys.EVENTS][0]
    return [(entry_id, dict(fields)) for entry_id, fields in entries]


class StoreEvents:
    """The events stream, read; a mixin of :class:`~taskwarden.store.Store`, which provides
    ``redis``."""

    redis: Redis

    def events(self, after: str = "0", count: int = 100, block_ms: int | None = None) -> Entries:
        """Transitions after stream id ``after`` ("0": from the oldest kept, "$": only new),
        oldest first; ``block_ms`` waits that long for one to arrive."""
        return _entries(self.redis.xread({keys.EVENTS: after}, count=count, block=block_ms))

    def latest_events(self, count: int) -> Entries:
        """The ``count`` newest transitions, newest first."""
        return cast(Entries, self.redis.xrevrange(keys.EVENTS, count=count))


class EventFollower:
    """Follows the events stream from one asyncio task, on a connection of its own: a blocking
    XREAD holds its connection, so it must hold neither a request thread nor a shared pool's."""

    def __init__(self, redis_url: str, block_s: float) -> None:
        # XREAD blocks for ``block_s`` seconds: the socket must wait longer than that (redis-py's
        # default read timeout, 5 s, broke every idle stream under the 15 s heartbeat)
        self._client = connection.connect_async(
            redis_url, decode_responses=True, socket_timeout=block_s + 10
        )
        self._block_ms = max(1, int(block_s * 1000))

    async def newest_id(self) -> str:
        """The id of the newest transition kept ("0-0" when there is none): where "only new
        ones" starts, pinned, so that nothing is missed between two reads."""
        last: Any = await self._client.xrevrange(keys.EVENTS, count=1)
        return str(last[0][0]) if last else "0-0"

    async def read(self, after: str, count: int) -> Entries:
        """Up to ``count`` transitions after stream id ``after``, oldest first, waiting up to
        ``block_s`` for one; [] when none came."""
        got: Any = await self._client.xread({keys.EVENTS: after}, count=count, block=self._block_ms)
        return _entries(got)

    async def aclose(self) -> None:
        await self._client.aclose()
