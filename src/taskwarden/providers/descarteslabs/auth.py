"""Descartes Labs bearer JWTs: bought with a refresh token at ``{accounts_url}/token``, renewed
before they expire. The mechanism is shared with EarthOne (:mod:`taskwarden.providers.bearer`);
this module binds it to :class:`~taskwarden.config.DescartesLabsSettings`.

A request answered 401 asks :meth:`TokenSource.after_401` for a new token once; a second 401
is final (:class:`~taskwarden.errors.CredentialsRejected`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from taskwarden.config import DescartesLabsSettings
from taskwarden.providers import bearer
from taskwarden.providers.bearer import REFRESH_BACKOFF, expires_at, jwt_claims, refresh_at

NAME = "descarteslabs"

__all__ = ["NAME", "REFRESH_BACKOFF", "TokenSource", "expires_at", "jwt_claims", "refresh_at"]


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
