"""UP42's HTTP conventions: the OAuth token and its refresh, the bearer, the v1 envelope, the
platform's timestamps.

Tokens come from ``POST {token_url}`` (Keycloak's token endpoint of the environment's auth host
unless set; see :class:`~taskwarden.config.Up42Settings`). A username and password make the
password grant exactly as up42-py 4.3 sends it (``http/oauth.py:35-61``): a form
(``application/x-www-form-urlencoded``) of ``grant_type=password``, ``username``,
``password``, ``client_id=up42-sdk`` and ``scope=openid``, in that order. Project credentials
make the v1 era's client-credentials grant (HTTP Basic ``project_id:api_key``, 0.34.1
``auth.py``). The token is read from ``access_token`` (Keycloak) or ``data.accessToken`` (the v1
``oauth/token``). It is kept until ``expires_in`` (or ``token_lifetime``) minus 30 s (4.3's
``expiry_offset``; at most half the lifetime), then fetched again, once for all the coroutines
that need it. A 401 on an API call means the platform dropped the token early: it is fetched
afresh and the call retried once (as 0.34.1 did; 4.3 raises), and a second 401 is
:class:`~taskwarden.errors.CredentialsRejected`. A fixed ``token`` is never refreshed.

v1 endpoints wrap their answer as ``{"data": ..., "error": ...}``; a truthy ``error`` with a
null ``data`` is a failure even on a 200 (:func:`v1_data`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from taskwarden import net
from taskwarden.config import Up42Settings
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RemoteNotFound,
    RequestRejected,
    TaskwardenError,
)

NAME = "up42"
MARGIN = 30.0  # seconds before expiry a token is replaced (the SDK's expiry_offset)
CLIENT_ID = "up42-sdk"  # up42-py 4.3 http/oauth.py:10
SCOPE = "openid"


@dataclass(frozen=True)
class _Token:
    value: str
    good_until: float  # time.monotonic()


class Up42Api:
    """Authenticated requests to one UP42 base URL, over the worker's shared client."""

    def __init__(self, settings: Up42Settings, client: httpx.AsyncClient) -> None:
        self.base = settings.base_url
        self._settings = settings
        self._client = client
        assert settings.token_url is not None  # Up42Settings fills it in
        self._token_url = settings.token_url
        self._fixed = None if settings.token is None else settings.token.get_secret_value()
        self.refreshable = settings.username is not None or settings.project_id is not None
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` is on the API's origin (only there does our token travel)."""
        ours = net.origin(self.base)
        return ours != net.NO_ORIGIN and net.origin(url) == ours

    def source(self, url: str) -> str:
        """A manifest source for a URL: relative to the API when on it; never a query."""
        parsed = httpx.URL(url)
        if self.same_origin(url):
            return parsed.path.removeprefix(httpx.URL(self.base).path).lstrip("/")
        return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}{parsed.path}"

    async def request(self, method: str, url: str, *, what: str, **kw: Any) -> httpx.Response:
        """One authenticated request (a 2xx response, read), refreshing the token once on 401."""
        token = await self._bearer()
        try:
            return await net.request(
                self._client, method, url, provider=NAME, what=what, headers=_auth(token), **kw
            )
        except CredentialsRejected as exc:
            if not self._stale(exc, token):
                raise
        token = await self._bearer()
        return await net.request(
            self._client, method, url, provider=NAME, what=what, headers=_auth(token), **kw
        )

    @asynccontextmanager
    async def stream(
        self, url: str, *, what: str, authenticated: bool = True
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET (body unread), with the bearer unless told not to (signed URLs)."""
        async with AsyncExitStack() as stack:
            token = await self._bearer() if authenticated else None
            headers = {"Accept-Encoding": "identity", **_auth(token)}
            opened = net.stream(self._client, "GET", url, provider=NAME, what=what, headers=headers)
            try:
                response = await stack.enter_async_context(opened)
            except CredentialsRejected as exc:
                if not authenticated or not self._stale(exc, token):
                    raise
                headers.update(_auth(await self._bearer()))
                again = net.stream(
                    self._client, "GET", url, provider=NAME, what=what, headers=headers
                )
                response = await stack.enter_async_context(again)
            yield response

    async def v1(self, path: str, *, what: str) -> tuple[Any, httpx.Response]:
        """GET a v1 endpoint: its ``data``, and the response (whose bytes may be archived)."""
        response = await self.request("GET", self.url(path), what=what)
        return v1_data(response), response

    async def json(self, url: str, *, what: str) -> tuple[Any, httpx.Response]:
        """GET a JSON document that has no envelope (v2 endpoints, data-json)."""
        response = await self.request("GET", url, what=what)
        return net.json_body(response, provider=NAME), response

    def _stale(self, exc: CredentialsRejected, token: str | None) -> bool:
        """After a 401: forget ``token`` if it can be replaced, and say whether to retry."""
        if exc.status_code != 401 or not self.refreshable:
            return False
        if self._token is not None and self._token.value == token:
            self._token = None  # unless another coroutine has replaced it already
        return True

    async def _bearer(self) -> str | None:
        if not self.refreshable:
            return self._fixed  # None: unauthenticated (a simulator with auth off)
        current = self._token
        if current is not None and current.good_until > time.monotonic():
            return current.value
        async with self._lock:
            current = self._token
            if current is None or current.good_until <= time.monotonic():
                current = self._token = await self._fetch_token()
        return current.value

    async def _fetch_token(self) -> _Token:
        settings = self._settings
        auth: httpx.BasicAuth | None = None
        if settings.username is not None and settings.password is not None:
            form = {
                "grant_type": "password",
                "username": settings.username,
                "password": settings.password.get_secret_value(),
                "client_id": CLIENT_ID,
                "scope": SCOPE,
            }
        else:
            assert settings.project_id is not None and settings.api_key is not None
            form = {"grant_type": "client_credentials"}
            auth = httpx.BasicAuth(settings.project_id, settings.api_key.get_secret_value())
        url = self._token_url
        try:
            response = await self._client.post(
                url, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise net.transport_error(exc, provider=NAME, method="POST", url=url) from exc
        if response.status_code in (400, 401, 403):
            # OAuth answers a bad password or key with 400/401 {"error", "error_description"}
            raise CredentialsRejected(
                f"UP42 refused the credentials ({response.status_code}): {_oauth_error(response)}",
                provider=NAME,
                status_code=response.status_code,
            )
        net.raise_for_status(response, provider=NAME, what="UP42 token endpoint")
        body = net.json_body(response, provider=NAME)
        return _token_from(body, settings.token_lifetime)


def _token_from(body: Any, default_lifetime: float) -> _Token:
    data = body.get("data") if isinstance(body, dict) else None
    value = body.get("access_token") if isinstance(body, dict) else None
    if not value and isinstance(data, dict):
        value = data.get("accessToken")
    if not isinstance(value, str) or not value:
        raise ProviderUnavailable("UP42 token response has no access_token", provider=NAME)
    lifetime = body.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = default_lifetime
    margin = min(MARGIN, lifetime / 2)
    return _Token(value, time.monotonic() + float(lifetime) - margin)


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return net.platform_message(response.content) or "no reason given"
    if isinstance(body, dict) and body.get("error_description"):
        return f"{body.get('error')}: {body['error_description']}"
    return net.error_message(body) or "no reason given"


def remote_time(value: Any) -> float | None:
    """Unix seconds of one of UP42's ISO 8601 timestamps (``…Z``; naive ones are UTC), or None
    when it is absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def v1_data(response: httpx.Response) -> Any:
    """The ``data`` of a v1 envelope; a truthy ``error`` with null ``data`` raises."""
    body = net.json_body(response, provider=NAME)
    where = f"{response.request.method} {response.request.url.path}"
    if not isinstance(body, dict) or "data" not in body:
        raise ProviderUnavailable(f"{where}: not a {{data, error}} envelope", provider=NAME)
    error = body.get("error")
    if error and body.get("data") is None:
        raise envelope_error(error, where)
    return body["data"]


def envelope_error(error: Any, where: str) -> TaskwardenError:
    """The error-tree exception for the ``error`` of a v1 envelope answered with a 2xx."""
    said = net.error_message({"error": error}) or "error"
    code = str(error.get("code", "")).upper() if isinstance(error, dict) else ""
    message = f"{where}: UP42 said {said}"
    if "NOT_FOUND" in code or code == "404":
        return RemoteNotFound(message, provider=NAME)
    if code in ("UNAUTHORIZED", "FORBIDDEN", "401", "403"):
        return CredentialsRejected(message, provider=NAME)
    if "INTERNAL" in code or "UNAVAILABLE" in code or code.startswith("5"):
        return ProviderUnavailable(message, provider=NAME)
    return RequestRejected(message, provider=NAME)
