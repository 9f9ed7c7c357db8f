"""Fault injection and request counters, shared by every platform simulator.

A platform declares its routes as :class:`Endpoint` objects; each wraps a Starlette handler so
that every request is counted (per platform, method, route template and task) and may be hit by
an armed :class:`Fault` before or while it is answered. At most one fault fires per request: the
first armed one that matches, in the order they were added.

Fault kinds:

    status          answer ``status`` (default 503) with the platform's error body, or ``body``
    rate_limit      answer 429, with ``Retry-After: <retry_after>`` when one is given
    delay           wait ``delay`` seconds, then answer normally
    reset           drop the connection with a TCP reset before answering
    truncate        announce the full Content-Length, send ``keep_bytes`` of the body, close
    stall           announce the full Content-Length, send ``keep_bytes`` of the body, then send
                    nothing for ``delay`` seconds (or until the client gives up), and close
    hang            accept the request and answer nothing for ``delay`` seconds (or until the
                    client gives up), then close
    trickle         answer normally, but send the body one byte every ``delay`` seconds (each
                    byte resets a per-read timeout; only a deadline on the whole answer ends it)
    malformed_json  answer 200 with half the JSON document (JSON routes only)
    unknown_status  report the status word ``word`` (routes that show a status only)

The state is touched from two threads (the server's event loop and the test driving it), so the
fault book takes a lock; counters are only written by the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

FaultKind = Literal[
    "status",
    "rate_limit",
    "delay",
    "reset",
    "truncate",
    "stall",
    "hang",
    "trickle",
    "malformed_json",
    "unknown_status",
]
GENERIC_KINDS = frozenset(
    {"status", "rate_limit", "delay", "reset", "truncate", "stall", "hang", "trickle"}
)
FAULT_SCOPE_KEY = "taskwarden.simulator.fault"  # where a handler finds the fault hitting it


class Fault(BaseModel):
    """One misbehaviour to inject; ``None`` filters match anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    platform: str | None = None
    task: str | None = None  # a task id; a platform's files count as their task's
    route: str | None = None  # platform-relative route template, e.g. "tasks/{uuid}/status/"
    method: str | None = None
    count: int | None = Field(1, ge=1)  # requests it hits before disarming; None: until removed
    status: int = Field(503, ge=400, le=599)
    retry_after: str | None = None  # seconds or an HTTP date, sent verbatim
    delay: float = Field(0.0, ge=0, le=600)
    keep_bytes: int = Field(0, ge=0)
    word: str = "REVOKED"
    body: str | None = None  # a raw body for ``status`` (an HTML 502 from a proxy, say)


@dataclass
class _Armed:
    id: int
    fault: Fault
    remaining: int | None
    fired: int = 0


class FaultBook:
    """The armed faults of a simulation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self._next_id = 1

    def add(self, fault: Fault) -> int:
        """Arm a fault; returns its id (for :meth:`remove`)."""
        with self._lock:
            fault_id = self._next_id
            self._next_id += 1
            self._armed.append(_Armed(fault_id, fault, fault.count))
            return fault_id

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._armed)
            self._armed = [armed for armed in self._armed if armed.id != fault_id]
            return len(self._armed) != before

    def clear(self) -> None:
        with self._lock:
            self._armed = []

    def armed(self) -> list[dict[str, Any]]:
        """The faults still armed, with how often each fired and how many hits remain."""
        with self._lock:
            return [
                {"id": a.id, "remaining": a.remaining, "fired": a.fired, **a.fault.model_dump()}
                for a in self._armed
            ]

    def take(
        self, platform: str, method: str, route: str, task: str | None, kinds: frozenset[str]
    ) -> Fault | None:
        """The fault that hits this request, if any, counting the hit."""
        if not self._armed:  # the hot path of a benchmark: no lock, no scan
            return None
        with self._lock:
            for armed in self._armed:
                fault = armed.fault
                if (
                    fault.kind in kinds
                    and fault.platform in (None, platform)
                    and fault.route in (None, route)
                    and (fault.method is None or fault.method.upper() == method)
                    and (fault.task is None or fault.task == task)
                ):
                    armed.fired += 1
                    if armed.remaining is not None:
                        armed.remaining -= 1
                        if armed.remaining <= 0:
                            self._armed.remove(armed)
                    return fault
        return None


@dataclass
class Stats:
    """What the simulators were asked, keyed by (platform, method, route template, task)."""

    requests: dict[tuple[str, str, str, str | None], int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    max_connections: int = 0
    clients: set[tuple[str, int]] = field(default_factory=set)
    # how many client connections the server holds open (idle keep-alive ones included); set by
    # whoever runs the server, sampled when a request arrives
    connection_probe: Callable[[], int] | None = None

    def begin(self, key: tuple[str, str, str, str | None], client: Any) -> None:
        self.requests[key] = self.requests.get(key, 0) + 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        if client is not None:
            self.clients.add((client[0], client[1]))
        if self.connection_probe is not None:
            self.max_connections = max(self.max_connections, self.connection_probe())

    def end(self) -> None:
        self.in_flight -= 1

    def count(
        self,
        *,
        platform: str | None = None,
        method: str | None = None,
        route: str | None = None,
        task: str | None = None,
    ) -> int:
        """Requests matching every filter given (route templates are platform-relative)."""
        return sum(
            n
            for (p, m, r, t), n in self.requests.copy().items()
            if (platform is None or p == platform)
            and (method is None or m == method)
            and (route is None or r == route)
            and (task is None or t == task)
        )

    def snapshot(self, prefixes: Mapping[str, str], by_task: bool = False) -> dict[str, Any]:
        """A JSON-ready summary; ``prefixes`` turns platform names into URL prefixes."""
        routes: dict[str, int] = {}
        tasks: dict[str, int] = {}
        for (platform, method, route, task), n in self.requests.copy().items():
            label = f"{method} {prefixes.get(platform, '/' + platform + '/')}{route}"
            routes[label] = routes.get(label, 0) + n
            if by_task and task is not None:
                tasks[task] = tasks.get(task, 0) + n
        summary: dict[str, Any] = {
            "total": sum(routes.values()),
            "routes": dict(sorted(routes.items())),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,  # requests being answered at once
            "open_connections": self.connection_probe() if self.connection_probe else None,
            "max_connections": self.max_connections,  # connections open at once
            "connections_opened": len(self.clients),  # distinct client sockets seen
        }
        if by_task:
            summary["tasks"] = tasks
        return summary

    def reset(self) -> None:
        self.requests = {}
        self.max_in_flight = self.in_flight
        self.max_connections = 0
        self.clients = set()


Handler = Callable[[Request], Awaitable[Response]]
ErrorBody = Callable[[int, str], Response]


@dataclass(frozen=True)
class Endpoint:
    """A counted, fault-injectable route of a platform (an ASGI app for a Starlette Route).

    ``task_of`` names the task a request concerns (for per-task faults and counters);
    ``kinds`` adds the platform-specific fault kinds the route can show (``unknown_status``);
    ``json`` says whether ``malformed_json`` applies.
    """

    platform: str
    method: str
    route: str
    handler: Handler
    faults: FaultBook
    stats: Stats
    error: ErrorBody
    task_of: Callable[[Mapping[str, Any]], str | None] = lambda params: None
    json: bool = True
    kinds: frozenset[str] = frozenset()

    @property
    def accepts(self) -> frozenset[str]:
        return GENERIC_KINDS | self.kinds | ({"malformed_json"} if self.json else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        task = self.task_of(scope.get("path_params", {}))
        self.stats.begin((self.platform, self.method, self.route, task), scope.get("client"))
        try:
            fault = self.faults.take(self.platform, self.method, self.route, task, self.accepts)
            if fault is None:
                response = await self.handler(request)
                await response(scope, receive, send)
                return
            await self._faulty(fault, scope, request, receive, send)
        finally:
            self.stats.end()

    async def _faulty(
        self, fault: Fault, scope: Scope, request: Request, receive: Receive, send: Send
    ) -> None:
        if fault.kind == "reset":
            await drop_connection(receive, send, reset=True)
            return
        if fault.kind in ("status", "rate_limit"):
            status = 429 if fault.kind == "rate_limit" else fault.status
            if fault.body is not None:
                response = Response(fault.body, status_code=status, media_type="text/html")
            else:
                response = self.error(status, "injected fault")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            await response(scope, receive, send)
            return
        if fault.kind == "hang":
            await _until_disconnect(receive, fault.delay)
            await drop_connection(receive, send, reset=False)
            return
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay)
        scope[FAULT_SCOPE_KEY] = fault
        response = await self.handler(request)
        if fault.kind == "malformed_json":
            body = bytes(response.body)
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            response = Response(body[: max(1, len(body) // 2)], response.status_code, headers)
        if fault.kind in ("truncate", "stall"):
            cut = _Truncating(send, fault.keep_bytes)
            await response(scope, receive, cut)
            if fault.kind == "stall":
                await _until_disconnect(receive, fault.delay)
            await drop_connection(receive, send, reset=False)
            return
        if fault.kind == "trickle":
            await _trickle(response, scope, receive, send, fault.delay)
            return
        await response(scope, receive, send)


async def _trickle(
    response: Response, scope: Scope, receive: Receive, send: Send, every: float
) -> None:
    """Send ``response`` whole, its body one byte every ``every`` seconds, until it is all
    sent or the client hangs up."""
    messages: list[Message] = []

    async def keep(message: Message) -> None:
        messages.append(message)

    await response(scope, receive, keep)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    await send(messages[0])
    gone = asyncio.Event()

    async def listen() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    listener = asyncio.create_task(listen())
    try:
        for i in range(len(body)):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await gone.wait()
            if gone.is_set():
                return
            more = i < len(body) - 1
            await send({"type": "http.response.body", "body": body[i : i + 1], "more_body": more})
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


class _Truncating:
    """A ``send`` that passes the response start and the first ``keep`` body bytes, and swallows
    the rest (the end-of-body message included, so the client keeps waiting for more)."""

    def __init__(self, send: Send, keep: int) -> None:
        self._send = send
        self._left = keep

    async def __call__(self, message: Message) -> None:
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        if self._left <= 0:
            return
        part = body[: self._left]
        self._left -= len(part)
        await self._send({"type": "http.response.body", "body": part, "more_body": True})


async def _until_disconnect(receive: Receive, seconds: float) -> None:
    """Wait ``seconds``, or less if the client hangs up first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass


async def drop_connection(receive: Receive, send: Send, *, reset: bool) -> None:
    """Close the client's connection mid-exchange: with a TCP reset, or after flushing.

    ASGI has no way to say this, so we reach uvicorn's transport through its ``receive`` (a
    bound method of the request cycle). Where that is not possible we start a response and
    leave it unfinished, which makes the server close the connection anyway.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )
        return
    if reset:
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    # wait until the server has seen the disconnect, so it does not log a half-sent response
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while (await receive())["type"] != "http.disconnect":
                pass


def route_maker(
    platform: str, faults: FaultBook, stats: Stats, error: ErrorBody
) -> Callable[..., Route]:
    """Make ``route(method, path, handler, **endpoint options)`` for one platform: a Starlette
    route at ``/path`` whose requests are counted and may be hit by faults. ``error=`` in the
    options overrides the platform's error body for that route."""

    def route(method: str, path: str, handler: Handler, **kw: Any) -> Route:
        body = kw.pop("error", error)
        endpoint = Endpoint(platform, method, path, handler, faults, stats, body, **kw)
        return Route("/" + path, endpoint, methods=[method])

    return route
