"""Bearer tokens for the generic HTTP provider, from a platform's token endpoint.

A profile with a ``token`` section (:class:`~taskwarden.config.providers.GenericToken`) gets its
bearer token by POSTing its form (OAuth2 client credentials, a refresh token, a password grant,
an API key exchange: whatever the form says) to the token URL. The token is kept per process and
per endpoint-and-credentials, so every watch of a profile shares one; it is fetched again shortly
before the lifetime the endpoint announced (``expires_in``) runs out, and at once when the
platform answers 401 to it. Concurrent checks that find the token stale fetch it once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from taskwarden import net
from taskwarden.config import GenericToken
from taskwarden.errors import ProviderUnavailable
from taskwarden.jsonpath import lookup

Key = tuple[Any, ...]


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float | None  # monotonic seconds; None: until the platform refuses it


def refresh_after(lifetime: float) -> float:
    """Seconds after issue to fetch a new token: a tenth of its life early, a minute at most,
    so a check never sets off with a token about to expire."""
    return max(0.0, lifetime - min(60.0, lifetime / 10))


class TokenCache:
    """The bearer tokens of one process's generic profiles."""

    def __init__(self, client: httpx.AsyncClient, provider: str) -> None:
        self._client = client
        self._provider = provider
        self._tokens: dict[Key, _Token] = {}
        self._locks: dict[Key, asyncio.Lock] = {}

    async def bearer(self, config: GenericToken, *, refused: str | None = None) -> str:
        """A token for ``config``; ``refused`` is one the platform just answered 401 to, which
        is never handed out again (unless the endpoint issues it anew)."""
        key = _key(config)
        async with self._locks.setdefault(key, asyncio.Lock()):
            now = time.monotonic()
            held = self._tokens.get(key)
            if (
                held is not None
                and held.value != refused
                and (held.refresh_at is None or now < held.refresh_at)
            ):
                return held.value
            value, lifetime = await self._fetch(config)
            at = None if lifetime is None else now + refresh_after(lifetime)
            self._tokens[key] = _Token(value, at)
            return value

    async def _fetch(self, config: GenericToken) -> tuple[str, float | None]:
        form = {name: secret.get_secret_value() for name, secret in config.form.items()}
        body: dict[str, Any] = {"json": form} if config.json_body else {"data": form}
        auth = None
        if config.basic_username is not None:
            password = config.basic_password.get_secret_value() if config.basic_password else ""
            auth = httpx.BasicAuth(config.basic_username, password)
        response = await net.request(
            self._client,
            "POST",
            config.url,
            provider=self._provider,
            what="token endpoint",
            auth=auth,
            headers={"Accept": "application/json"},
            # a 307 would resend the credentials in the body to wherever it points
            follow_redirects=False,
            **body,
        )
        document = net.json_body(response, provider=self._provider)
        token = lookup(document, config.token_path)
        if not isinstance(token, str) or not token:
            parts = urlsplit(config.url)
            raise ProviderUnavailable(
                f"POST {parts.scheme}://{parts.netloc}{parts.path}: the token endpoint's answer"
                f" has no token at {config.token_path!r}",
                provider=self._provider,
            )
        lifetime = None
        if config.expires_in_path is not None:
            announced = lookup(document, config.expires_in_path)
            if isinstance(announced, int | float) and not isinstance(announced, bool):
                lifetime = float(announced) if announced > 0 else None
        return token, lifetime


def _key(config: GenericToken) -> Key:
    form = tuple(sorted((k, v.get_secret_value()) for k, v in config.form.items()))
    password = config.basic_password.get_secret_value() if config.basic_password else None
    return (config.url, config.json_body, config.basic_username, password, form)
