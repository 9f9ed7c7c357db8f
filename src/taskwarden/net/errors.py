"""How an HTTP failure becomes an error-tree exception, in the platform's own words.

:mod:`~taskwarden.providers.http` sends the requests; this module names what went wrong. How
failures are classified:

    transport: connect error, timeout, reset, ReadError,
               RemoteProtocolError (a short body), bad encoding  → ProviderUnavailable
    408, 425, 5xx                                                → ProviderUnavailable
                                                                   (``retry_after`` from the header)
    429                                                          → RateLimited (``retry_after``)
    401, 403                                                     → CredentialsRejected
    404, 410                                                     → RemoteNotFound
    400, 422 and any other 4xx                                   → RequestRejected
    a 2xx body that is not JSON where JSON was expected          → ProviderUnavailable
    a body read whole that is over the cap                       → ResponseTooLarge
    a URL we could not send (bad scheme, bad header)             → RequestRejected

(The two rows about a body are raised by :mod:`~taskwarden.providers.http`, which reads it.)

Malformed JSON is *retryable* on purpose: in practice a garbled or cut-off body comes from a
proxy, a restart or a dropped connection, and the next poll usually reads a good one. A platform
that keeps answering garbage still ends in ``error`` once the retry policy runs out.

Messages name the method and the path of the request, never its query string (where an API key
may travel) nor any header. The caller raises the exception ``from`` the httpx one, so it is kept
as ``__cause__``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
    RequestRejected,
    TaskwardenError,
)
from taskwarden.net.headers import parse_retry_after

MAX_MESSAGE = 300  # platform messages are quoted into watch histories; keep them a line long


def raise_for_status(
    response: httpx.Response,
    *,
    provider: str,
    what: str | None = None,
    body: bytes | None = None,
) -> None:
    """Raise the error-tree exception for a non-2xx response.

    The platform's message is taken from ``body``, or from the response when it has been read.
    """
    if response.is_success:
        return
    code = response.status_code
    where = describe_request(response.request.method, response.request.url)
    said = platform_message(response.content if body is None else body)
    reason = f"{code} {response.reason_phrase}".strip()
    tail = f": {said}" if said else ""
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if code == 429:
        raise RateLimited(
            f"{where}: rate limited ({reason}){tail}",
            provider=provider,
            status_code=code,
            retry_after=retry_after,
        )
    if code >= 500 or code in (408, 425):
        raise ProviderUnavailable(
            f"{where}: {reason}{tail}", provider=provider, status_code=code, retry_after=retry_after
        )
    if code in (401, 403):
        raise CredentialsRejected(
            f"{where}: credentials rejected ({reason}){tail}", provider=provider, status_code=code
        )
    if code in (404, 410):
        subject = what or "resource"
        raise RemoteNotFound(
            f"{subject} not found ({where}){tail}", provider=provider, status_code=code
        )
    if 300 <= code < 400:  # a redirect we could not follow (no Location, or too many)
        raise ProviderUnavailable(f"{where}: {reason}{tail}", provider=provider, status_code=code)
    raise RequestRejected(f"{where}: {reason}{tail}", provider=provider, status_code=code)


def transport_error(
    exc: httpx.HTTPError | httpx.InvalidURL, *, provider: str, method: str, url: str | httpx.URL
) -> TaskwardenError:
    """The error-tree exception for an httpx transport failure (the caller raises it ``from``)."""
    where = describe_request(method, url)
    kind = type(exc).__name__
    detail = str(exc) or kind
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
        return RequestRejected(
            f"{where}: cannot send request ({kind}: {detail})", provider=provider
        )
    return ProviderUnavailable(f"{where}: {kind}: {detail}"[:MAX_MESSAGE], provider=provider)


def platform_message(body: bytes) -> str | None:
    """The platform's own words from an error body, or None when it said nothing readable."""
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return _squash(text) or None
    return error_message(body)


def error_message(body: Any) -> str | None:
    """Pull a human message out of an error document, in the shapes the platforms use.

    ``{"detail": "..."}``, ``{"detail": {"msg", "type"}}``, ``{"detail": [{"msg", "loc"}]}``
    (FastAPI; Geobox), ``{"errors": [{"title", "detail"}]}`` (JSON:API), ``{"error": ...}``,
    ``{"message": ...}``.
    """
    if isinstance(body, str):
        return _squash(body) or None
    if isinstance(body, list):
        parts = [part for part in (error_message(item) for item in body) if part]
        return _squash("; ".join(parts)) or None
    if not isinstance(body, Mapping):
        return None
    for key in ("detail", "errors", "error", "message"):
        if body.get(key):
            return _describe(body[key])
    if "msg" in body:
        return _describe(body)
    return None


def _describe(value: Any) -> str | None:
    if isinstance(value, str):
        return _squash(value) or None
    if isinstance(value, list):
        parts = [part for part in (_describe(item) for item in value) if part]
        return _squash("; ".join(parts)) or None
    if isinstance(value, Mapping):
        msg = value.get("msg") or value.get("message") or value.get("detail")
        msg = msg or value.get("title")
        if msg is None:
            return _squash(json.dumps(value, sort_keys=True, default=str))
        text = _describe(msg) or ""
        loc = value.get("loc")
        if isinstance(loc, list | tuple) and loc:
            text = f"{text} ({'.'.join(str(part) for part in loc)})"
        kind = value.get("type")
        if isinstance(kind, str) and kind and not isinstance(loc, list | tuple):
            text = f"{kind}: {text}"
        return _squash(text) or None
    return _squash(str(value)) or None


def describe_request(method: str, url: str | httpx.URL) -> str:
    """``method`` and ``url`` for a message: scheme, host and path, never user info or query."""
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except httpx.InvalidURL:
        return f"{method} <invalid URL>"
    # netloc and path only: user info and the query string may carry credentials
    return f"{method} {parsed.scheme}://{parsed.netloc.decode('ascii')}{parsed.path}"


def _squash(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
