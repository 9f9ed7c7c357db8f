"""A rate limit per provider, shared by every worker process on every host through Redis.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp):
each request reserves the next free slot, ``1 / rate`` seconds after the previous one, and a
burst of ``burst`` requests may run ahead of the schedule. A reservation is one Lua call that
reads Redis's own clock, so hosts with skewed clocks still share one schedule; the caller then
sleeps until its slot. Requests are spaced, never refused, so nothing is lost to the limit.

The guarantee is on the slots: in any window of T seconds at most ``rate * T + burst`` requests
are released. What the platform sees can differ by a request or two at the edges of a window,
by the time a request takes from its slot to the platform.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis

from taskwarden import keys
from taskwarden.store import connection

# KEYS[1]: the provider's timestamp key. ARGV: interval (s), burst. Returns the wait in µs.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = math.floor(tonumber(ARGV[1]) * 1000000)
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return wait
"""


@dataclass(frozen=True)
class Limit:
    """``rate`` requests per second, with up to ``burst`` at once."""

    rate: float
    burst: int


class RateLimiter:
    """Reserves request slots per provider; one per worker process, on its event loop."""

    def __init__(self, client: aioredis.Redis, limits: dict[str, Limit]) -> None:
        self._client = client
        self._limits = limits
        self._reserve = client.register_script(_RESERVE)
        self.waited: dict[str, float] = {}  # seconds spent waiting, per provider
        self._unreported: dict[str, tuple[int, float]] = {}  # waits since the last drain()

    @classmethod
    def from_url(cls, url: str, limits: dict[str, Limit]) -> RateLimiter:
        """A limiter on its own asyncio connection to the Redis at ``url``."""
        return cls(connection.connect_async(url), limits)

    def limited(self, provider: str) -> bool:
        return provider in self._limits

    def limit(self, provider: str) -> Limit | None:
        return self._limits.get(provider)

    async def reserve(self, provider: str) -> float:
        """Reserve this request's slot; return how long until it comes (0 when unlimited). The
        caller waits that long (:meth:`acquire` does both)."""
        limit = self._limits.get(provider)
        if limit is None:
            return 0.0
        micros = await self._reserve(
            keys=[keys.RATE + provider], args=[1.0 / limit.rate, max(1, limit.burst)]
        )
        wait = int(micros) / 1_000_000
        if wait > 0:
            self.waited[provider] = self.waited.get(provider, 0.0) + wait
            count, seconds = self._unreported.get(provider, (0, 0.0))
            self._unreported[provider] = (count + 1, seconds + wait)
        return wait

    async def acquire(self, provider: str) -> float:
        """Wait for this request's slot; return how long that took (0 when unlimited)."""
        wait = await self.reserve(provider)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def drain(self) -> dict[str, tuple[int, float]]:
        """Waits since the last call, per provider, as (count, seconds): for the metrics."""
        waits, self._unreported = self._unreported, {}
        return waits

    async def aclose(self) -> None:
        await self._client.aclose()
