"""Descartes Labs bearer JWTs: bought with a refresh token at ``{accounts_url}/token``, renewed
before they expire. The mechanism is shared with EarthOne (:mod:`taskwarden.providers.bearer`);
this module binds it to :class:`~taskwarden.config.DescartesLabsSettings` and to the grant the
SDK chooses by client id.

The official SDK (1.12.1, ``descarteslabs/auth/auth.py`` ``Auth._get_token``) posts JSON to
``POST {iam}/token`` (``https://iam.descarteslabs.com`` by default) with a grant chosen by the
client id:

    the legacy client id ZOBAi4UROl5gKZIpxxlwOEfx8KpqXf2c
        {"scope": "openid name groups org email", "client_id", "grant_type":
         "urn:ietf:params:oauth:grant-type:jwt-bearer", "target": <client id>,
         "api_type": "app", "refresh_token"}
    any other client id
        {"client_id", "grant_type": "refresh_token", "refresh_token"}  (+ "scope" when given)

A request answered 401 asks :meth:`TokenSource.after_401` for a new token once; a second 401
is final (:class:`~taskwarden.errors.CredentialsRejected`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import httpx

from taskwarden.config import DescartesLabsSettings
from taskwarden.providers import bearer
from taskwarden.providers.bearer import REFRESH_BACKOFF, expires_at, jwt_claims, refresh_at

NAME = "descarteslabs"
# client ids the SDK sends the jwt-bearer delegation grant for (1.12.1 auth.py:703-718; 4.0's
# LEGACY_DELEGATION_CLIENT_IDS)
LEGACY_CLIENT_IDS = frozenset({"ZOBAi4UROl5gKZIpxxlwOEfx8KpqXf2c"})
LEGACY_SCOPE = ("openid", "name", "groups", "org", "email")  # the SDK's default for them
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

__all__ = [
    "JWT_BEARER",
    "LEGACY_CLIENT_IDS",
    "NAME",
    "REFRESH_BACKOFF",
    "TokenSource",
    "expires_at",
    "jwt_claims",
    "refresh_at",
    "token_request",
]


class TokenSource(bearer.TokenSource):
    """The bearer token of one Descartes Labs adapter (see :class:`bearer.TokenSource`)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: DescartesLabsSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            client,
            provider=NAME,
            url=f"{settings.accounts_url}/token",
            client_id=settings.client_id,
            refresh_token=settings.refresh_token,
            token=settings.token,
            leeway=settings.refresh_leeway,
            clock=clock,
        )
        self._scope = settings.scope

    def grant(self) -> dict[str, str]:
        """The token request's JSON body, field for field what the SDK sends for this client."""
        assert self._refresh_token is not None and self._client_id is not None
        return token_request(self._client_id, self._refresh_token.get_secret_value(), self._scope)


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
