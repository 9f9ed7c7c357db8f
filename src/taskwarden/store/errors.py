"""What a store call can raise: redis-py's exceptions under the store's names, so that the layers
above catch a store that is away without importing redis themselves."""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    RedisError,
    ResponseError,
    TimeoutError,
)

StoreError = RedisError  # anything a Redis call raised
StoreRefused = ResponseError  # Redis refused the command (a bad stream id, a full Redis, ...)
# the store is away for now (a restart, a failover, loading its data): worth waiting out
UNREACHABLE: tuple[type[RedisError], ...] = (ConnectionError, TimeoutError, BusyLoadingError)
# the connection failed; redis-py's TimeoutError is *not* a subclass: catch UNREACHABLE to wait out
# an outage
StoreUnreachable = ConnectionError

__all__ = ["UNREACHABLE", "StoreError", "StoreRefused", "StoreUnreachable"]
