"""An httpx transport that spreads requests over many small connection pools.

httpcore's connection pool does work in proportion to the connections it holds on every request
(encode/httpx#3215), so one pool gets slower the more requests are in flight. Measured on this
project's 2-core machine against a trivial local server: one ``AsyncClient`` made 1,066 req/s at
2 requests in flight, 481 at 16 and 301 at 64; the same 64 in flight spread over 32 pools of 2
connections made 1,163 req/s. Polls need many requests in flight to hide a platform's latency,
so the process's client sends through this transport instead of a single pool.

Each shard is an ordinary ``httpx.AsyncHTTPTransport``; a request goes to the shard with the
fewest requests in flight, counting a response as in flight until its body is closed (a
streaming download holds its connection that long).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import httpx


class _Released(httpx.AsyncByteStream):
    """A response body that tells its shard when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                self._release()
                self._release = None


class ShardedTransport(httpx.AsyncBaseTransport):
    """``max_connections`` connections, as pools of ``per_shard``, least busy first."""

    def __init__(self, max_connections: int, per_shard: int) -> None:
        count = max(1, math.ceil(max_connections / per_shard))
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        # one TLS context for all: building one per shard costs ~50 ms each (2.6 s for 50)
        tls = httpx.create_ssl_context()
        self._shards = [httpx.AsyncHTTPTransport(limits=limits, verify=tls) for _ in range(count)]
        self._busy = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._shards)), key=self._busy.__getitem__)
        self._busy[index] += 1

        def release() -> None:
            self._busy[index] -= 1

        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Released(response.stream, release),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        # every provider's client shares this transport, and each closes it on its way out
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.aclose()
