"""HTTP plumbing shared by every adapter: the client, its requests and their in-call retries.

Each worker process builds one :func:`build_client` and hands it to every provider, so the client
has timeouts and pool limits but no ``base_url``. Adapters call :func:`request` (a whole JSON or
text response), :func:`stream` (a download) and :func:`iter_body`; nothing above this module sees
an httpx type.

Two layers of retries. Here, *in the call*: an idempotent request (GET, HEAD, OPTIONS), or the
opening of a download, that fails on a connection error, a reset or cut-off body, a 5xx, or a
429/503 whose ``Retry-After`` is at most ``TASKWARDEN_HTTP__RETRY_MAX_WAIT``, is sent again up to
``TASKWARDEN_HTTP__RETRIES`` more times, after a full-jitter pause (uniform in
``[0, RETRY_BACKOFF * 2 ** (n - 1)]``, capped by ``RETRY_MAX_WAIT``) or the ``Retry-After``. Any
method is sent again when the connection could not even be made (the request never left). Not
retried here: read/write/pool timeouts (a timeout has already spent its whole budget; doing it
three times would hold a worker three times as long), a long ``Retry-After``, a body over the
size cap, and every 4xx. Those surface to the worker, whose retry policy (``lifecycle``) spaces
out the next check over minutes instead of seconds.

Bodies read whole (:func:`request`) are capped at ``TASKWARDEN_HTTP__MAX_JSON_BYTES`` decoded
bytes: an announced ``Content-Length`` over the cap fails before reading, an unannounced one
stops reading at the cap. Either is :class:`ResponseTooLarge` (retryable; see errors.py).

A failure is raised from the error tree (see errors.py), translated by
:mod:`~taskwarden.net.errors` (the classification table is there); what response
headers say is read by :mod:`~taskwarden.net.headers`.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from taskwarden import logs
from taskwarden.config import HttpSettings
from taskwarden.errors import (
    ProviderUnavailable,
    RateLimited,
    ResponseTooLarge,
    RetryableError,
    TaskwardenError,
)
from taskwarden.net.errors import describe_request, raise_for_status, transport_error
from taskwarden.net.headers import content_length
from taskwarden.net.transport import ShardedTransport
from taskwarden.version import __version__

T = TypeVar("T")
ERROR_BODY_LIMIT = 64 * 1024  # enough for any error document; a huge one is not worth reading
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# puts an error-tree exception in a platform's own words, given the error response's body
Reword = Callable[[TaskwardenError, bytes], TaskwardenError]

log = logs.get("taskwarden.http")


@dataclass(frozen=True)
class CallPolicy:
    """In-call retries of one request, and the cap on bodies read whole (``HttpSettings``)."""

    retries: int = 2
    backoff: float = 0.25
    max_wait: float = 2.0
    max_json_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> CallPolicy:
        return cls(
            retries=settings.retries,
            backoff=settings.retry_backoff,
            max_wait=settings.retry_max_wait,
            max_json_bytes=settings.max_json_bytes,
        )

    def pause(self, error: TaskwardenError, attempt: int, draw: float) -> float | None:
        """Seconds to wait before sending again after failed attempt ``attempt`` (1-based),
        or None when this failure is not retried in the call. ``draw`` is uniform in [0, 1]."""
        if attempt > self.retries or not in_call_retryable(error):
            return None
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            return retry_after if retry_after <= self.max_wait else None
        if isinstance(error, RateLimited):
            return None  # "slow down" without a time: the poll schedule backs off instead
        ceiling = min(self.max_wait, self.backoff * 2.0 ** min(attempt - 1, 32))
        return ceiling * min(max(draw, 0.0), 1.0)


class ProviderClient(httpx.AsyncClient):
    """The providers' httpx client: an ``AsyncClient`` that carries its :class:`CallPolicy`."""

    def __init__(self, *, calls: CallPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = calls


def call_policy(client: httpx.AsyncClient) -> CallPolicy:
    """The in-call policy of ``client`` (a plain ``AsyncClient`` gets the defaults)."""
    return client.calls if isinstance(client, ProviderClient) else CallPolicy()


def in_call_retryable(error: TaskwardenError) -> bool:
    """Whether a failed request may be sent again at once (see the module docstring)."""
    if not isinstance(error, RetryableError) or isinstance(error, ResponseTooLarge):
        return False
    cause = error.__cause__
    # a connect timeout never reached the platform; any other timeout spent its whole budget
    timed_out = isinstance(cause, httpx.TimeoutException)
    return not timed_out or isinstance(cause, httpx.ConnectTimeout)


def _never_sent(error: TaskwardenError) -> bool:
    # the connection was never made, so not even a POST reached the platform
    return isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout)


def build_client(
    settings: HttpSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    before_request: Callable[[httpx.Request], Awaitable[None]] | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for providers (no ``base_url``: each adapter builds absolute URLs).

    ``transport`` lets several clients share one set of connection pools (a worker gives each
    provider its own client over one transport); ``before_request`` runs before every request,
    redirects included (the worker's cluster-wide rate limit).
    """
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.write_timeout,
        pool=settings.pool_timeout,
    )
    return ProviderClient(
        calls=CallPolicy.from_settings(settings),
        timeout=timeout,
        # many small pools: one big httpx pool slows down as requests in flight grow
        transport=transport
        or ShardedTransport(settings.max_connections, settings.connections_per_pool),
        event_hooks={"request": [before_request]} if before_request else None,
        # platforms hand downloads to storage behind a redirect; httpx drops the Authorization
        # header when a redirect leaves the origin
        follow_redirects=True,
        headers={"User-Agent": f"taskwarden/{__version__}"},
    )


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    what: str | None = None,
    idempotent: bool | None = None,
    reword: Reword | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request and return its (fully read) 2xx response, or raise from the error tree.

    ``what`` names the thing asked for in a 404 message ("task 1234"); ``idempotent`` overrides
    whether the method may be sent again on failure (GET, HEAD, OPTIONS by default); ``reword``
    puts a non-2xx error in the platform's own words, given the error body; ``kwargs`` go to
    httpx. The body is read up to the client's ``max_json_bytes``.
    """
    calls = call_policy(client)
    send_options: dict[str, Any] = {
        k: kwargs.pop(k) for k in ("auth", "follow_redirects") if k in kwargs
    }

    def once() -> Awaitable[httpx.Response]:
        return _request_once(
            client, method, url, provider, what, calls.max_json_bytes, send_options, kwargs, reword
        )

    return await retry_in_call(client, method, url, once, provider=provider, idempotent=idempotent)


async def retry_in_call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    once: Callable[[], Awaitable[T]],
    *,
    provider: str,
    idempotent: bool | None = None,
) -> T:
    """``once()``, made again after a pause while it fails as the in-call retries allow (the
    module docstring; the client's :class:`CallPolicy`): what :func:`request` and :func:`stream`
    do, for an adapter that sends its requests itself. ``idempotent`` as in :func:`request`."""
    calls = call_policy(client)
    again = method.upper() in IDEMPOTENT if idempotent is None else idempotent
    attempt = 0
    while True:
        attempt += 1
        try:
            return await once()
        except TaskwardenError as exc:
            if not (again or _never_sent(exc)):
                raise
            pause = calls.pause(exc, attempt, random.random())
            if pause is None:
                raise
            _log_retry(provider, method, url, attempt, pause, exc)
        await asyncio.sleep(pause)


async def _request_once(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    provider: str,
    what: str | None,
    max_bytes: int,
    send_options: dict[str, Any],
    kwargs: dict[str, Any],
    reword: Reword | None,
) -> httpx.Response:
    try:
        built = client.build_request(method, url, **kwargs)
        response = await client.send(built, stream=True, **send_options)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise transport_error(exc, provider=provider, method=method, url=url) from exc
    try:
        if not response.is_success:
            body = await _read_error_body(response)
            try:
                raise_for_status(response, provider=provider, what=what, body=body)
            except TaskwardenError as exc:
                reworded = exc if reword is None else reword(exc, body)
                if reworded is exc:  # raising it "from" itself would make it its own cause
                    raise
                raise reworded from exc
        await read_capped(response, provider=provider, limit=max_bytes)
    except httpx.HTTPError as exc:
        raise transport_error(exc, provider=provider, method=method, url=url) from exc
    finally:
        await response.aclose()
    return response


async def read_capped(response: httpx.Response, *, provider: str, limit: int) -> bytes:
    """Read a streamed response whole, refusing more than ``limit`` decoded bytes.

    Over the limit (announced or received) is :class:`ResponseTooLarge`; fewer bytes than an
    announced ``Content-Length`` is :class:`ProviderUnavailable`. Afterwards ``response.content``
    is the body, as after ``aread()``. httpx errors are left to the caller to translate.
    """
    announced = content_length(response)
    if announced is not None and announced > limit:
        raise _too_large(f"announces {announced} bytes", limit, provider, response)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"is over {limit} bytes", limit, provider, response)
        chunks.append(chunk)
    if announced is not None and size != announced:
        where = describe_request(response.request.method, response.request.url)
        raise ProviderUnavailable(
            f"{where}: body has {size} bytes, {announced} were announced",
            provider=provider,
            status_code=response.status_code,
        )
    body = b"".join(chunks)
    response._content = body  # what aread() sets: .content, .text and .json() now work
    return body


def _too_large(said: str, limit: int, provider: str, response: httpx.Response) -> ResponseTooLarge:
    # the request is described only here: every status check reads a body, few are too large
    where = describe_request(response.request.method, response.request.url)
    return ResponseTooLarge(
        f"{where}: the {response.status_code} response body {said}; the cap on status and"
        f" metadata bodies is {limit} bytes (TASKWARDEN_HTTP__MAX_JSON_BYTES)",
        provider=provider,
        status_code=response.status_code,
    )


def _log_retry(
    provider: str, method: str, url: str, attempt: int, pause: float, exc: TaskwardenError
) -> None:
    log.debug(
        "http.retry",
        provider=provider,
        request=describe_request(method, url),
        attempt=attempt,
        pause_s=round(pause, 3),
        error=str(exc),
    )


def json_body(response: httpx.Response, *, provider: str) -> Any:
    """The JSON of a read response; a body that does not parse is :class:`ProviderUnavailable`."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        where = describe_request(response.request.method, response.request.url)
        raise ProviderUnavailable(
            f"{where}: malformed JSON in a {response.status_code} response ({exc})",
            provider=provider,
            status_code=response.status_code,
        ) from exc


@asynccontextmanager
async def stream(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    what: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[httpx.Response]:
    """Open a streamed 2xx response (body not read yet), or raise from the error tree.

    Opening it is retried in the call like :func:`request` (a GET's first response); once the
    body is being read, a failure is the caller's to retry. Iterate the body with
    :func:`iter_body`; leaving the context closes the connection.
    """
    response = await retry_in_call(
        client, method, url, lambda: _open(client, method, url, provider, what, kwargs),
        provider=provider,
    )  # fmt: skip
    try:
        yield response
    except httpx.HTTPError as exc:
        raise transport_error(exc, provider=provider, method=method, url=url) from exc
    finally:
        await response.aclose()


async def _open(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    provider: str,
    what: str | None,
    kwargs: dict[str, Any],
) -> httpx.Response:
    try:
        response = await client.send(client.build_request(method, url, **kwargs), stream=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise transport_error(exc, provider=provider, method=method, url=url) from exc
    if response.is_success:
        return response
    try:
        body = await _read_error_body(response)
        raise_for_status(response, provider=provider, what=what, body=body)
    except httpx.HTTPError as exc:
        raise transport_error(exc, provider=provider, method=method, url=url) from exc
    finally:
        await response.aclose()
    raise AssertionError("unreachable: raise_for_status raises for a non-2xx response")


async def iter_body(
    response: httpx.Response, *, provider: str, expected: int | None = None
) -> AsyncIterator[bytes]:
    """The body of a streamed response, in chunks, with transport errors translated.

    ``expected`` (the announced length) is checked at the end: fewer bytes is
    :class:`ProviderUnavailable`, whatever the HTTP layer thought of it.
    """
    received = 0
    try:
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            yield chunk
    except httpx.HTTPError as exc:
        request_ = response.request
        raise transport_error(
            exc, provider=provider, method=request_.method, url=request_.url
        ) from exc
    if expected is not None and received != expected:
        where = describe_request(response.request.method, response.request.url)
        raise ProviderUnavailable(
            f"{where}: body has {received} bytes, {expected} were announced", provider=provider
        )


async def _read_error_body(response: httpx.Response) -> bytes:
    """At most ERROR_BODY_LIMIT bytes of a streamed error response, for its message."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_LIMIT:
            break
    return b"".join(chunks)[:ERROR_BODY_LIMIT]
