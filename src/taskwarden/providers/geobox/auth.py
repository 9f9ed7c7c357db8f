"""How a Geobox request proves who sends it: a fixed token, an API key, or a password login.

The SDK (``geobox`` 2.11, ``geobox/api.py`` ``GeoboxClient``) takes, in this order, an access
token (``Authorization: Bearer``), else an API key (``?apikey=`` on the URL), else a username
and password, with which it logs in once, at construction::

    POST {base_url}auth/token/   form username, password   → 200 {"access_token", ...}

It reads only ``access_token`` and never renews it: a token that expires, or that the server
drops, makes every later call raise ``AuthenticationError`` until the user calls
``update_access_token()``. A warden outlives any token, so :class:`Credentials` logs in at the
first request, again before the token expires when the answer says when (``expires_in``, or a
JWT's ``exp``; the SDK reads neither), and once more when a call is refused with 401; a second
401 right after a fresh login is final. Concurrent requests share one login.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from taskwarden import net
from taskwarden.config import GeoboxSettings
from taskwarden.errors import CredentialsRejected, PermanentError, ProviderUnavailable

NAME = "geobox"
LOGIN_PATH = "auth/token/"
RENEW_MARGIN = 30.0  # seconds before a known expiry to log in again (a quarter of short lives)


class Credentials:
    """What to add to each request: headers (a bearer token) or query parameters (an API key).

    ``clock`` gives epoch seconds (JWT ``exp`` is epoch seconds); tests pass their own.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: GeoboxSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._login_url = settings.base_url + LOGIN_PATH
        self._clock = clock
        self._lock = asyncio.Lock()
        self._form: dict[str, str] | None = None
        self._token: str | None = None
        self._renew_at: float | None = None
        self.params: dict[str, str] = {}
        self.logins = 0  # logins so far, for tests and logs
        if settings.token is not None:
            self._token = settings.token.get_secret_value()
        elif settings.apikey is not None:
            self.params = {"apikey": settings.apikey.get_secret_value()}
        elif settings.username is not None and settings.password is not None:
            self._form = {
                "username": settings.username,
                "password": settings.password.get_secret_value(),
            }

    @property
    def logs_in(self) -> bool:
        return self._form is not None

    async def headers(self) -> dict[str, str]:
        """The ``Authorization`` header to send now, logging in first when one is due."""
        if self._form is not None and self._due():
            async with self._lock:  # the requests waiting here reuse the one login
                if self._due():
                    await self._login()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def after_401(self, sent: dict[str, str]) -> dict[str, str] | None:
        """The headers ``sent`` were refused with 401: fresh ones after a new login, or None
        when logging in again cannot help (a fixed token, an API key)."""
        if self._form is None:
            return None
        async with self._lock:
            if sent.get("Authorization") == f"Bearer {self._token}":
                await self._login()
        return {"Authorization": f"Bearer {self._token}"}

    def _due(self) -> bool:
        if self._token is None:
            return True
        return self._renew_at is not None and self._clock() >= self._renew_at

    async def _login(self) -> None:
        started = self._clock()
        try:
            response = await net.request(
                self._client, "POST", self._login_url, provider=NAME, what="geobox login",
                data=self._form,
            )  # fmt: skip
        except PermanentError as exc:
            # 401 wrong password, 422 a field missing: the credentials, whatever the code
            raise CredentialsRejected(
                f"login refused: {exc} (check TASKWARDEN_PROVIDERS__GEOBOX__USERNAME and PASSWORD)",
                provider=NAME,
                status_code=exc.status_code,
            ) from exc
        body = net.json_body(response, provider=NAME)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable(
                f"POST {LOGIN_PATH}: the login answered {response.status_code} without an"
                " access_token",
                provider=NAME,
                status_code=response.status_code,
            )
        self.logins += 1
        self._token = token
        self._renew_at = renew_at(started, body, token)


def renew_at(started: float, body: dict[str, Any], token: str) -> float | None:
    """When to log in again: a known expiry (``expires_in`` seconds after ``started``, else the
    JWT's ``exp``) less the margin; None when the platform says nothing (then only a 401)."""
    lifetime = _number(body.get("expires_in"))
    expiry = started + lifetime if lifetime is not None and lifetime > 0 else None
    if expiry is None:
        claims = _jwt_claims(token)
        expiry = _number(claims.get("exp")) if claims is not None else None
    if expiry is None:
        return None
    return expiry - min(RENEW_MARGIN, max(0.0, expiry - started) / 4)


def _jwt_claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
