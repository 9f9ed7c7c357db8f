"""Redis clients for a ``TASKWARDEN_REDIS_URL``: one Redis, or the master Sentinel points at.

A Sentinel client (:mod:`taskwarden.config.redis_url` reads the URL) asks the sentinels for the
master's address on every new connection; once a failover has promoted a replica, a command on a
dropped connection fails (redis-py retries it), the next connection asks again and lands on the
new master, and a demoted master's ``READONLY`` answers are treated the same way. Lua scripts are
loaded again where the new master lacks them (redis-py's ``NOSCRIPT`` handling).
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from taskwarden.config.redis_url import SentinelTarget, sentinel_target

# asking a sentinel for the master's address must not hang on a sentinel that went away
SENTINEL_TIMEOUT = 5.0


def connect(url: str, **options: Any) -> redis.Redis:
    """A client on the Redis ``url`` names; ``options`` are redis-py connection options."""
    target = sentinel_target(url)
    if target is None:
        return redis.Redis.from_url(url, **options)
    sentinel = redis.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=_sentinel_options(), **_master_options(target, options)
    )
    client: redis.Redis = sentinel.master_for(target.master, redis_class=_SentinelRedis)
    return client


def connect_async(url: str, **options: Any) -> redis.asyncio.Redis:
    """The asyncio client of :func:`connect`."""
    target = sentinel_target(url)
    if target is None:
        return redis.asyncio.Redis.from_url(url, **options)
    sentinel = redis.asyncio.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=_sentinel_options(), **_master_options(target, options)
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        target.master, redis_class=_SentinelAsyncRedis
    )
    return client


class _SentinelRedis(redis.Redis):
    """A master's client that also closes its connections to the sentinels when closed."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            cast(Any, self.connection_pool).sentinel_manager.close()


class _SentinelAsyncRedis(redis.asyncio.Redis):
    """The asyncio :class:`_SentinelRedis`."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await cast(Any, self.connection_pool).sentinel_manager.aclose()


def _sentinel_options() -> dict[str, Any]:
    return {"socket_connect_timeout": SENTINEL_TIMEOUT, "socket_timeout": SENTINEL_TIMEOUT}


def _master_options(target: SentinelTarget, options: dict[str, Any]) -> dict[str, Any]:
    master: dict[str, Any] = {"db": target.db, **options}
    if target.username is not None:
        master["username"] = target.username
    if target.password is not None:
        master["password"] = target.password
    return master
