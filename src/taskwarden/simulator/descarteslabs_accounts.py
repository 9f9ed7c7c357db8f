"""The simulated Descartes Labs accounts (IAM) service: refresh tokens buy short-lived JWTs.

    POST /descarteslabs/accounts/token   JSON, the grant the SDK (1.12.1 ``Auth._get_token``)
                                         sends for the client id → {"access_token" | "id_token"}

    a legacy client id (``ZOBAi4UROl5gKZIpxxlwOEfx8KpqXf2c``)
        {scope, client_id, grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer",
         target: <the client id>, api_type: "app", refresh_token}
    any other client id
        {client_id, grant_type: "refresh_token", refresh_token[, scope]}

A grant the client id does not take is refused as the SDK would never send it: 400
``unauthorized_client`` (the OAuth word for "not a grant this client may use"; the real
service's body is a guess). Tokens are real JWTs (HS256, signed with a secret of this
simulator) whose claims the SDK reads unverified: ``sub``, ``aud`` (the client id), ``iat`` and
``exp`` in epoch seconds of the simulation clock, so a test that advances the clock expires
them. :meth:`Accounts.revoke` makes every token issued so far fail, as a key rotation would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

ISSUER = "https://iam.descarteslabs.com/"
LEGACY_CLIENT_ID = "ZOBAi4UROl5gKZIpxxlwOEfx8KpqXf2c"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
KEPT_REQUESTS = 50  # token request bodies remembered, newest last


class AccountsConfig(BaseModel):
    """Who may buy tokens (client id → refresh token), which of them take the legacy
    jwt-bearer grant, how long tokens live (simulation seconds), under which field the token is
    returned, and whether the APIs check them."""

    model_config = ConfigDict(extra="forbid")

    auth_required: bool = True
    clients: dict[str, str] = {
        "sim-client": "sim-refresh-token",
        LEGACY_CLIENT_ID: "sim-legacy-refresh-token",
    }
    legacy_clients: list[str] = [LEGACY_CLIENT_ID]
    token_ttl: float = Field(3600.0, gt=0)
    token_field: Literal["access_token", "id_token"] = "access_token"  # noqa: S105 a name


class Accounts:
    """Issues and checks the JWTs of the simulated platform."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.config = AccountsConfig()
        self.counters: Counter[str] = Counter()  # issued, refused, unauthorized (401s served)
        self.requests: list[dict[str, Any]] = []  # the token requests' JSON bodies, newest last
        self._secret = secrets.token_bytes(32)
        self._generation = 0

    def mint(self, client_id: str = "sim-client", ttl: float | None = None) -> str:
        """A signed JWT for ``client_id`` living ``ttl`` simulation seconds (config default)."""
        now = self.clock.epoch(self.clock.now())
        lifetime = self.config.token_ttl if ttl is None else ttl
        claims = {
            "iss": ISSUER,
            "sub": f"sim|{client_id}",
            "aud": client_id,
            "iat": int(now),
            "exp": now + lifetime,
            "name": "Simulated User",
            "groups": ["public"],
            "gen": self._generation,
            **self.extra_claims(client_id),
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{header}.{body}.{self._sign(f'{header}.{body}')}"

    def extra_claims(self, client_id: str) -> dict[str, Any]:
        """Claims a platform built on this service adds to its tokens (none here)."""
        return {}

    def revoke(self) -> None:
        """Make every token issued so far fail with 401 (new ones work)."""
        self._generation += 1

    def namespace(self, request: Request) -> str:
        """The user namespace the real service prefixes to new product ids: sha1 of ``sub``."""
        claims = self.claims(request)
        sub = str(claims.get("sub", "anonymous")) if claims else "anonymous"
        return hashlib.sha1(sub.encode(), usedforsecurity=False).hexdigest()

    def claims(self, request: Request) -> dict[str, Any] | None:
        header = request.headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            return None
        return self._verify(header[7:].strip())

    def refusal(self, request: Request) -> str | None:
        """Why the request's bearer token is refused, or None when it is good (or not needed)."""
        if not self.config.auth_required:
            return None
        header = request.headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            return "Missing bearer token"
        claims = self._verify(header[7:].strip())
        if claims is None:
            return "Invalid token"
        if claims.get("gen") != self._generation:
            return "Token has been revoked"
        if self.clock.epoch(self.clock.now()) >= float(claims.get("exp", 0)):
            return "Token has expired"
        return None

    async def token(self, request: Request) -> Response:
        """``POST accounts/token``: trade a client id and refresh token for a JWT, with the
        grant the SDK uses for that client id."""
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            return self._refuse(400, "invalid_request", "The body must be a JSON object.")
        self.requests = [*self.requests[-KEPT_REQUESTS + 1 :], dict(body)]
        client_id, refresh = body.get("client_id"), body.get("refresh_token")
        if not isinstance(client_id, str) or not isinstance(refresh, str):
            return self._refuse(400, "invalid_request", "client_id and refresh_token required.")
        refused = self._grant_refusal(client_id, body)
        if refused is not None:
            return refused
        known = self.config.clients.get(client_id)
        if known is None or not hmac.compare_digest(known, refresh):
            return self._refuse(401, "invalid_grant", "Unknown or invalid refresh token.")
        self.counters["issued"] += 1
        token = self.mint(client_id)
        return JSONResponse(
            {
                self.config.token_field: token,
                "token_type": "Bearer",
                "expires_in": int(self.config.token_ttl),
            }
        )

    def _grant_refusal(self, client_id: str, body: Mapping[str, Any]) -> Response | None:
        """Why this grant is wrong for ``client_id``, or None: what the SDK sends is right."""
        grant = body.get("grant_type")
        if client_id not in self.config.legacy_clients:
            if grant == "refresh_token":
                return None
            if grant == JWT_BEARER:
                return self._refuse(
                    400, "unauthorized_client", "This client must use grant_type refresh_token."
                )
            return self._refuse(400, "unsupported_grant_type", f"Unknown grant_type {grant!r}.")
        if grant != JWT_BEARER:
            return self._refuse(
                400, "unauthorized_client", f"This client must use grant_type {JWT_BEARER}."
            )
        scope = body.get("scope")
        if body.get("target") != client_id or body.get("api_type") != "app":
            return self._refuse(
                400, "invalid_request", "The delegation needs target=<client_id>, api_type=app."
            )
        if not isinstance(scope, str) or "openid" not in scope.split():
            return self._refuse(400, "invalid_scope", "The delegation scope must include openid.")
        return None

    def _refuse(self, status: int, error: str, description: str) -> Response:
        self.counters["refused"] += 1
        return JSONResponse({"error": error, "error_description": description}, status)

    def _verify(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(
            parts[2], self._sign(f"{parts[0]}.{parts[1]}")
        ):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) else None

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
