"""isahit lab's wire: the login session, authenticated requests, and the platform's error words.

The SDK logs in with ``POST api/user-manager/auth/login`` (form ``access_id``, ``secret_key``),
which answers **201** ``{"access_token", "expires_in"}`` (seconds), and sends
``Authorization: Bearer <token>`` on every call. Like the SDK, :class:`IsahitApi` logs in again
shortly before the token expires; unlike it, it also logs in again once when a call is refused
with 401 (a token the server dropped early), and one process logs in once however many polls
wait on it.

Errors are NestJS bodies, ``{"statusCode", "message", "error"}``, with a numeric ``errorCode``
on a 400. They are classified by :func:`taskwarden.net.errors.raise_for_status`; only the
words are isahit's: the ``message`` (which the shared helper would skip for ``error``, a bare
reason phrase) and the ``errorCode``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from taskwarden import net
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RetryableError,
    TaskwardenError,
)

NAME = "isahit"
LOGIN_PATH = "api/user-manager/auth/login"
REFRESH_MARGIN = 15.0  # seconds before expiry to log in again (the SDK's AUTH_REFRESHING_SPAN)

Params = Sequence[tuple[str, str]]


class IsahitApi:
    """Authenticated calls to one isahit lab API, sharing the worker's HTTP client.

    With no credentials, calls go out without ``Authorization`` (a simulator with auth off).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        access_id: str | None,
        secret_key: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._base = base_url
        self._form = {"access_id": access_id, "secret_key": secret_key} if access_id else None
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.logins = 0

    def url(self, path: str) -> str:
        return self._base + path

    async def get(self, path: str, params: Params, *, what: str) -> httpx.Response:
        """``GET path`` with the session's token; a 401 costs one fresh login and one retry."""
        token = await self._current()
        try:
            return await self._send("GET", path, params, token, what)
        except CredentialsRejected as exc:
            if token is None or exc.status_code != 401:
                raise
        self._discard(token)
        token = await self._current()
        try:
            return await self._send("GET", path, params, token, what)
        except CredentialsRejected as exc:
            raise type(exc)(
                f"{exc} (again with a fresh login)", provider=NAME, status_code=exc.status_code
            ) from exc

    async def _send(
        self, method: str, path: str, params: Params, token: str | None, what: str
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await send(
            self._client, method, self.url(path), what=what, params=params, headers=headers
        )

    async def _current(self) -> str | None:
        """A token that is good for a while yet, logging in when there is none."""
        if self._form is None:
            return None
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        async with self._lock:  # the polls waiting here reuse the one login
            if self._token is None or self._clock() >= self._renew_at:
                await self._login()
            return self._token

    def _discard(self, token: str) -> None:
        if self._token == token:  # another poll may have logged in meanwhile
            self._token = None

    async def _login(self) -> None:
        started = self._clock()
        try:
            response = await send(
                self._client, "POST", self.url(LOGIN_PATH), what="isahit login", data=self._form
            )
        except CredentialsRejected as exc:
            raise CredentialsRejected(
                f"{exc} (check TASKWARDEN_PROVIDERS__ISAHIT__ACCESS_ID and SECRET_KEY)",
                provider=NAME,
                status_code=exc.status_code,
            ) from exc
        self.logins += 1
        body = net.json_body(response, provider=NAME)
        token = body.get("access_token") if isinstance(body, dict) else None
        lifetime = body.get("expires_in") if isinstance(body, dict) else None
        if (
            not isinstance(token, str)
            or not token
            or isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or lifetime <= 0
        ):
            raise ProviderUnavailable(
                f"POST {LOGIN_PATH}: the login answered {response.status_code} without an"
                " access_token and a positive expires_in",
                provider=NAME,
                status_code=response.status_code,
            )
        self._token = token
        # the SDK's 15 s, but never more than a quarter of a short token's life
        self._renew_at = started + lifetime - min(REFRESH_MARGIN, lifetime / 4)


async def send(
    client: httpx.AsyncClient, method: str, url: str, *, what: str, **kwargs: Any
) -> httpx.Response:
    """One request, with the in-call retries and body cap every provider has (:func:`net.request`);
    its 2xx response, or the error-tree exception in isahit's own words."""
    return await net.request(
        client, method, url, provider=NAME, what=what, reword=reworded, **kwargs
    )


def reworded(exc: TaskwardenError, body: bytes) -> TaskwardenError:
    """``exc`` with the platform's message in isahit's words, when they say more."""
    mine = nest_message(body)
    theirs = net.platform_message(body)
    if not mine or mine == theirs:
        return exc
    text = exc.message
    text = text[: -len(theirs)] + mine if theirs and text.endswith(theirs) else f"{text}: {mine}"
    if isinstance(exc, RetryableError):
        return type(exc)(
            text, provider=NAME, status_code=exc.status_code, retry_after=exc.retry_after
        )
    return type(exc)(text, provider=NAME, status_code=exc.status_code)


def nest_message(body: bytes) -> str | None:
    """``message`` (a string or a list of them) and ``errorCode`` of a NestJS error body."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, Mapping):
        return None
    message = document.get("message")
    if isinstance(message, list):
        message = "; ".join(str(part) for part in message)
    words = str(message).strip() if message else ""
    code = document.get("errorCode")
    if code is not None and not isinstance(code, dict | list):
        words = f"{words} (errorCode {code})" if words else f"errorCode {code}"
    words = " ".join(words.split())
    return words[: net.MAX_MESSAGE] or None
