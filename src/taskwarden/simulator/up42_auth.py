"""The UP42 simulator's logins: Keycloak's token endpoint as up42-py 4.3 uses it, the v1 era's
``oauth/token``, userinfo, and the bearer check every API route makes.

Keycloak (``POST realms/public/protocol/openid-connect/token``, 4.3 ``host.token_endpoint``)
takes the password grant of a known public client only: the form must be
``application/x-www-form-urlencoded`` with ``grant_type``, and ``client_id`` must be one of
``client_ids`` (``up42-sdk``, 4.3 ``http/oauth.py``). It answers as Keycloak does:

    no form / no grant_type     400 {"error": "invalid_request", ...}
    no or unknown client_id     401 {"error": "invalid_client", ...}
    another grant               400 {"error": "unsupported_grant_type", ...}
    wrong user or password      401 {"error": "invalid_grant", "error_description":
                                     "Invalid user credentials"}
    success                     access_token, expires_in, refresh_token, refresh_expires_in,
                                token_type "Bearer", scope, id_token (scope openid), ...

The v1 era's ``POST oauth/token`` (0.34.1 ``auth.py``) takes the password grant without a
client id, or client credentials (HTTP Basic ``project_id:api_key``), and answers in
``token_shape``. Every token request is recorded (:attr:`Up42Tokens.requests`), so that tests
can compare what two clients sent.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from taskwarden.simulator.up42_http import KEYCLOAK, WORKSPACE, problem, v1_error

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

FORM = "application/x-www-form-urlencoded"
KEYCLOAK_TOKEN = f"{KEYCLOAK}/token"
LEGACY_TOKEN = "oauth/token"  # noqa: S105 a path, not a secret


class Up42Auth(BaseModel):
    """Who may call, how tokens behave (times in simulation seconds), and where signed URLs
    point."""

    model_config = ConfigDict(extra="forbid")

    auth_required: bool = True
    tokens: list[str] = ["sim-token"]  # fixed bearer tokens that never expire
    users: dict[str, str] = {"sim-user": "sim-password"}  # password grant
    projects: dict[str, str] = {"sim-project": "sim-api-key"}  # client credentials (v1 era)
    client_ids: list[str] = ["up42-sdk"]  # Keycloak clients allowed the password grant
    token_ttl: float = Field(300.0, gt=0)  # Keycloak's default access token lifespan
    announced_ttl: float | None = Field(None, ge=0)  # expires_in sent; None: token_ttl, 0: none
    # oauth/token only: the token at access_token (new), data.accessToken (old SDKs), or both
    token_shape: Literal["new", "old", "both"] = "both"  # noqa: S105 not a secret
    # signed URLs on this host name instead of the API's (e.g. "localhost" for 127.0.0.1)
    storage_host: str | None = None


@dataclass(frozen=True)
class TokenRequest:
    """What one token request carried."""

    path: str
    content_type: str
    form: list[tuple[str, str]]
    basic_user: str | None  # the HTTP Basic user, when there was one


class Up42Tokens:
    """Issues, checks and counts tokens."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.config = Up42Auth()
        self.issued: dict[str, float] = {}  # token → expiry (simulation time)
        self.rejected = 0  # API requests refused for an unknown or expired token
        self.grants = 0  # tokens issued
        self.requests: list[TokenRequest] = []

    def clear(self) -> None:
        self.issued, self.requests = {}, []
        self.rejected = self.grants = 0

    def revoke(self) -> None:
        """Expire every issued token now (the next call with one is a 401)."""
        self.issued = dict.fromkeys(self.issued, self.clock.now())

    def valid(self, request: Request) -> tuple[bool, str]:
        """Whether ``request`` carries a usable bearer token, and if not, why."""
        if not self.config.auth_required:
            return True, ""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        if token is not None and token in self.config.tokens:
            return True, ""
        expiry = self.issued.get(token or "")
        if expiry is not None and expiry > self.clock.now():
            return True, ""
        self.rejected += 1
        return False, "Token expired" if expiry is not None else "Invalid or missing token"

    def denied(self, request: Request, v2: bool = False) -> Response | None:
        """The 401 for a request without a valid bearer token, or None."""
        ok, reason = self.valid(request)
        if ok:
            return None
        return problem(401, reason) if v2 else v1_error(401, reason)

    async def keycloak(self, request: Request) -> Response:
        """``POST realms/public/protocol/openid-connect/token``, as Keycloak answers."""
        form = await self._record(request, KEYCLOAK_TOKEN)
        if form is None or "grant_type" not in form:
            return _oauth(400, "invalid_request", "Missing form parameter: grant_type")
        if form.get("client_id") not in self.config.client_ids:
            return _oauth(401, "invalid_client", "Invalid client or Invalid client credentials")
        if form["grant_type"] != "password":
            return _oauth(400, "unsupported_grant_type", "Unsupported grant_type")
        if self.config.users.get(form.get("username", "")) != form.get("password"):
            return _oauth(401, "invalid_grant", "Invalid user credentials")
        token, announced = self._issue()
        scope = "openid email profile" if "openid" in form.get("scope", "").split() else ""
        body: dict[str, Any] = {
            "access_token": token,
            "refresh_token": "sim-refresh-" + secrets.token_urlsafe(8),
            "refresh_expires_in": 1800,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": secrets.token_hex(8),
            "scope": scope or "email profile",
        }
        if announced:
            body["expires_in"] = int(announced)
        if scope:
            body["id_token"] = "sim-id-" + secrets.token_urlsafe(8)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def legacy(self, request: Request) -> Response:
        """``POST oauth/token``: the v1 era's password grant or client credentials."""
        form = await self._record(request, LEGACY_TOKEN) or {}
        grant = form.get("grant_type")
        if grant == "password":
            ok = self.config.users.get(form.get("username", "")) == form.get("password")
        elif grant == "client_credentials":
            who, secret = _basic(request.headers.get("authorization", ""))
            ok = who is not None and self.config.projects.get(who) == secret
        else:
            return _oauth(400, "unsupported_grant_type", f"grant {grant!r}")
        if not ok:
            return _oauth(401, "invalid_grant", "Invalid user credentials")
        token, announced = self._issue()
        answer: dict[str, Any] = {}
        if self.config.token_shape in ("new", "both"):
            answer |= {"access_token": token, "token_type": "bearer", "scope": "openid"}
            if announced:
                answer["expires_in"] = int(announced)
        if self.config.token_shape in ("old", "both"):
            # no "error" key, not even null: OAuth clients (oauthlib) read any as a failure
            answer |= {"data": {"accessToken": token}}
        return JSONResponse(answer)

    async def userinfo(self, request: Request) -> Response:
        """Keycloak's userinfo: the ``sub`` 4.3 takes for the workspace id."""
        ok, _ = self.valid(request)
        if not ok:
            said = 'Bearer realm="public", error="invalid_token"'
            return _oauth(401, "invalid_token", "Token verification failed", said)
        return JSONResponse({"sub": WORKSPACE, "email_verified": True})

    def _issue(self) -> tuple[str, float]:
        token = "sim-" + secrets.token_urlsafe(16)
        config = self.config
        self.issued[token] = self.clock.now() + config.token_ttl
        self.grants += 1
        return token, config.token_ttl if config.announced_ttl is None else config.announced_ttl

    async def _record(self, request: Request, path: str) -> dict[str, str] | None:
        """Record the request; its form, or None when the body is not a form."""
        kind = request.headers.get("content-type", "")
        pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), True)
        user, _ = _basic(request.headers.get("authorization", ""))
        self.requests.append(TokenRequest(path, kind, pairs, user))
        return dict(pairs) if kind.split(";")[0].strip().lower() == FORM else None


def _oauth(status: int, error: str, description: str, challenge: str = "") -> Response:
    headers = {"WWW-Authenticate": challenge} if challenge else None
    return JSONResponse({"error": error, "error_description": description}, status, headers)


def _basic(header: str) -> tuple[str | None, str | None]:
    if header[:6].lower() != "basic ":
        return None, None
    try:
        user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return user, secret
