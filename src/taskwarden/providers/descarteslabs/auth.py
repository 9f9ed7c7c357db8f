"""Descartes Labs bearer JWTs: bought with a refresh token, renewed before they expire.

The official SDK (1.12.1, ``descarteslabs/auth/auth.py`` ``Auth._get_token``) posts JSON to
``POST {iam}/token`` (``iam_url``, ``https://iam.descarteslabs.com`` by default) with a grant
chosen by the client id:

    the legacy client id ZOBAi4UROl5gKZIpxxlwOEfx8KpqXf2c
        {"scope": "openid name groups org email", "client_id", "grant_type":
         "urn:ietf:params:oauth:grant-type:jwt-bearer", "target": <client id>,
         "api_type": "app", "refresh_token"}
    any other client id
        {"client_id", "grant_type": "refresh_token", "refresh_token"}  (+ "scope" when given)

and takes ``access_token`` (or, from older accounts services, ``id_token``) from the answer. It
reads the JWT's ``exp`` claim, unverified, and refreshes within a leeway of it. So do we, with
two differences: the leeway is capped at half the token's lifetime (a token that lives less
than the leeway would otherwise be refreshed before every request), and concurrent requests
share one refresh behind an :class:`asyncio.Lock`.

One :class:`TokenSource` lives in each adapter, so each worker process holds its own token.
A request answered 401 asks :meth:`TokenSource.after_401` for a new token once; a second 401
is final (:class:`~taskwarden.errors.CredentialsRejected`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from taskwarden import net
from taskwarden.config import DescartesLabsSettings
from taskwarden.errors import (
    CredentialsRejected,
    PermanentError,
    ProviderUnavailable,
    RetryableError,
)

NAME = "descarteslabs"
# client ids the SDK sends the jwt-bearer delegation grant for (1.12.1 auth.py:703-718; 4.0's
# LEGACY_DELEGATION_CLIENT_IDS)
LEGACY_CLIENT_IDS = frozenset({"ZOBAi4UROl5gKZIpxxlwOEfx8KpqXf2c"})
LEGACY_SCOPE = ("openid", "name", "groups", "org", "email")  # the SDK's default for them
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_BACKOFF = 30.0  # seconds before retrying a failed refresh while the old token works


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, unverified (we only read its times); None when it is no JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def refresh_at(claims: dict[str, Any] | None, leeway: float) -> float | None:
    """When (epoch seconds) a token with these claims should be replaced; None: only on a 401.

    That is ``exp`` less the leeway, the leeway capped at half of ``exp - iat``.
    """
    if claims is None:
        return None
    exp, iat = _number(claims.get("exp")), _number(claims.get("iat"))
    if exp is None:
        return None
    margin = leeway
    if iat is not None and exp > iat:
        margin = min(leeway, (exp - iat) / 2)
    return exp - margin


def expires_at(claims: dict[str, Any] | None) -> float | None:
    return None if claims is None else _number(claims.get("exp"))


class TokenSource:
    """The bearer token of one adapter: a fixed one, none, or one renewed from a refresh token.

    ``clock`` gives epoch seconds (JWT times are epoch seconds); tests pass their own.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: DescartesLabsSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._url = f"{settings.accounts_url}/token"
        self._client_id = settings.client_id
        self._refresh_token = settings.refresh_token
        self._scope = settings.scope
        self._leeway = settings.refresh_leeway
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at: float | None = None
        self._expires_at: float | None = None
        self.refreshes = 0  # tokens bought so far, for tests and logs
        if self._refresh_token is None and settings.token is not None:
            self._token = settings.token.get_secret_value()

    @property
    def can_refresh(self) -> bool:
        return self._refresh_token is not None and self._client_id is not None

    async def current(self) -> str | None:
        """A token to send now: refreshed first when it is missing or due."""
        if not self.can_refresh:
            return self._token
        if self._due():
            async with self._lock:
                if self._due():  # another request may have refreshed while we waited
                    await self._renew(proactive=self._token is not None)
        return self._token

    async def after_401(self, rejected: str | None) -> str | None:
        """``rejected`` was refused with a 401: a new token, or None when none can be had.

        Many requests refused together cause one refresh: whoever gets the lock first renews;
        the others find the token already changed and use the new one.
        """
        if not self.can_refresh:
            return None
        async with self._lock:
            if self._token == rejected:
                await self._renew(proactive=False)
        return self._token

    def _due(self) -> bool:
        if self._token is None:
            return True
        return self._renew_at is not None and self._clock() >= self._renew_at

    async def _renew(self, *, proactive: bool) -> None:
        try:
            token = await self._fetch()
        except (RetryableError, PermanentError):
            now = self._clock()
            # like the SDK: a failed early refresh is not fatal while the old token still works
            if proactive and self._expires_at is not None and now < self._expires_at:
                self._renew_at = now + min(REFRESH_BACKOFF, (self._expires_at - now) / 2)
                return
            raise
        claims = jwt_claims(token)
        self._token = token
        self._renew_at = refresh_at(claims, self._leeway)
        self._expires_at = expires_at(claims)
        self.refreshes += 1

    def grant(self) -> dict[str, str]:
        """The token request's JSON body, field for field what the SDK sends for this client."""
        assert self._refresh_token is not None and self._client_id is not None
        return token_request(self._client_id, self._refresh_token.get_secret_value(), self._scope)

    async def _fetch(self) -> str:
        body = self.grant()
        try:
            response = await net.request(
                self._client, "POST", self._url, provider=NAME, what="token endpoint", json=body
            )
        except PermanentError as exc:
            # 400 invalid_grant, 401, 403: whatever the code, the refresh token was refused
            raise CredentialsRejected(
                f"refresh token refused: {exc}", provider=NAME, status_code=exc.status_code
            ) from exc
        data = net.json_body(response, provider=NAME)
        token = None
        if isinstance(data, dict):
            token = data.get("access_token") or data.get("id_token")
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable(
                f"POST {self._url}: the answer has no access_token or id_token", provider=NAME
            )
        return token


def token_request(
    client_id: str, refresh_token: str, scope: Sequence[str] | None = None
) -> dict[str, str]:
    """The SDK's token request body for ``client_id`` (``Auth._get_token``), in its key order."""
    if client_id in LEGACY_CLIENT_IDS:
        return {
            "scope": " ".join(LEGACY_SCOPE if scope is None else scope),
            "client_id": client_id,
            "grant_type": JWT_BEARER,
            "target": client_id,
            "api_type": "app",
            "refresh_token": refresh_token,
        }
    body = {"client_id": client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope is not None:
        body["scope"] = " ".join(scope)
    return body


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
