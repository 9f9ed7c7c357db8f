"""Bearer JWTs bought with a refresh token and renewed before they expire, shared by the adapters
of platforms whose SDKs authenticate this way (Descartes Labs, and its successor EarthOne).

Both SDKs (``descarteslabs.auth.Auth``, ``earthdaily.earthone.auth.Auth``) post

    POST {token_url}  {"client_id", "grant_type": "refresh_token", "refresh_token"}

and take ``access_token`` (or, from older services, ``id_token``) from the answer. They read the
JWT's ``exp`` claim, unverified, and refresh within a leeway of it. So do we, with two
differences: the leeway is capped at half the token's lifetime (a token that lives less than
the leeway would otherwise be refreshed before every request, as the SDKs do), and concurrent
requests share one refresh behind an :class:`asyncio.Lock`.

One :class:`TokenSource` lives in each adapter, so each worker process holds its own token.
:func:`with_bearer` sends a request with the current token; a 401 asks for a new token once,
and a second 401 is final (:class:`~taskwarden.errors.CredentialsRejected`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from taskwarden import net
from taskwarden.errors import (
    CredentialsRejected,
    PermanentError,
    ProviderUnavailable,
    RetryableError,
)

T = TypeVar("T")
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

    ``url`` is the token endpoint; ``provider`` names the platform in errors. ``clock`` gives
    epoch seconds (JWT times are epoch seconds); tests pass their own.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        provider: str,
        url: str,
        client_id: str | None,
        refresh_token: SecretStr | None,
        token: SecretStr | None = None,
        leeway: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._provider = provider
        self._url = url
        self._client_id = client_id
        self._refresh_token = refresh_token
        self._leeway = leeway
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at: float | None = None
        self._expires_at: float | None = None
        self.refreshes = 0  # tokens bought so far, for tests and logs
        if refresh_token is None and token is not None:
            self._token = token.get_secret_value()

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
            # like the SDKs: a failed early refresh is not fatal while the old token still works
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
        """The token request's JSON body: the refresh-token grant (an adapter whose SDK sends
        another grant for some clients overrides this)."""
        assert self._refresh_token is not None and self._client_id is not None
        return {
            "client_id": self._client_id,
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token.get_secret_value(),
        }

    async def _fetch(self) -> str:
        body = self.grant()
        name = self._provider
        try:
            response = await net.request(
                self._client, "POST", self._url, provider=name, what="token endpoint", json=body
            )
        except PermanentError as exc:
            # 400 invalid_grant, 401, 403: whatever the code, the refresh token was refused
            raise CredentialsRejected(
                f"refresh token refused: {exc}", provider=name, status_code=exc.status_code
            ) from exc
        data = net.json_body(response, provider=name)
        token = None
        if isinstance(data, dict):
            token = data.get("access_token") or data.get("id_token")
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable(
                f"POST {self._url}: the answer has no access_token or id_token", provider=name
            )
        return token


async def with_bearer(tokens: TokenSource, send: Callable[[dict[str, str]], Awaitable[T]]) -> T:
    """``send(headers)`` with the current bearer token; a 401 buys one new token and one retry.

    ``send`` is called at most twice and must raise from the error tree (``net.request``,
    ``net.stream`` entered on an exit stack); a 403, a second 401, or a 401 with no way to
    renew is raised as it came.
    """
    token = await tokens.current()
    try:
        return await send(bearer(token))
    except CredentialsRejected as exc:
        if exc.status_code != 401:
            raise
        fresh = await tokens.after_401(token)
        if fresh is None:
            raise
    return await send(bearer(fresh))


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header of ``token`` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
