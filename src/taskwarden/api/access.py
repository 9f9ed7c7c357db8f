"""The API's access log: one ``http.request`` line per request, in place of uvicorn's.

Fields: method, path (never the query string, which may hold a secret), status, duration_ms
and the client's address. Never a header, so never the bearer token. A server error logs at
``error``; everything else at ``info``. An event stream's line comes when it closes.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskwarden import logs

log = logs.get("taskwarden.api.access")


class AccessLog:
    """ASGI middleware writing the access line of every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}  # what a request that raised before answering ends with

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            code = status["code"]
            fields: dict[str, Any] = {
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            }
            client = scope.get("client")
            if client:
                fields["client"] = client[0]
            (log.error if code >= 500 else log.info)("http.request", **fields)
