"""What every UP42 simulator module shares: the paths, the ids of the simulated account, the
error bodies of the API and of the storage behind signed URLs, and the URL signer.

Imported by the state (:mod:`.up42_state`), the token service (:mod:`.up42_auth`) and both
route modules (:mod:`.up42_routes`, :mod:`.up42_stac`); it imports none of them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from taskwarden.simulator.faults import FAULT_SCOPE_KEY

NAME = "up42"
PREFIX = "/up42"
JOB = "projects/{project}/jobs/{job}"
TASK = JOB + "/tasks/{task}"
KEYCLOAK = "realms/public/protocol/openid-connect"  # up42-py 4.3 host.token_endpoint()
STAC = "v2/assets/stac"
# one workspace: what userinfo's "sub" (4.3 takes it as the workspace id, base.py:69),
# users/me (0.34) and every processing job's workspaceID say
WORKSPACE = "sim-workspace"
ACCOUNT = "sim-account"


def v1_error(status: int, message: str) -> Response:
    """UP42's v1 error envelope."""
    codes = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 429: "TOO_MANY_REQUESTS"}
    code = codes.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else "BAD_REQUEST")
    return JSONResponse({"data": None, "error": {"code": code, "message": message}}, status)


def problem(status: int, detail: str) -> Response:
    """An RFC 7807 problem document, as v2 endpoints answer errors."""
    titles = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
    body = {"type": "about:blank", "title": titles.get(status, "Error"), "status": status}
    return JSONResponse(body | {"detail": detail}, status, media_type="application/problem+json")


def storage_error(status: int, code: str, message: str, details: str = "") -> Response:
    """Google Cloud Storage's XML error, as a signed URL answers."""
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message>" + (f"<Details>{details}</Details>" if details else "")
    ) + "</Error>"
    return PlainTextResponse(body, status, media_type="application/xml; charset=UTF-8")


def expired(what: str) -> Response:
    """Google Cloud Storage's answer to an expired signed URL."""
    said = "The provided token has expired."
    return storage_error(400, "ExpiredToken", said, f"Request signature expired for {what}")


def signed_refusal(request: Request, what: str) -> Response | None:
    """A signed URL's refusal of a request that also carries an Authorization header (a
    guess: storage services accept one authentication mechanism per request)."""
    if "authorization" not in request.headers:
        return None
    message = "Only one authentication mechanism may be used: the signature or the header."
    return storage_error(400, "InvalidArgument", message, what)


def fault_word(request: Request) -> str | None:
    fault = request.scope.get(FAULT_SCOPE_KEY)
    return fault.word if fault is not None and fault.kind == "unknown_status" else None


def base_url(request: Request) -> str:
    """This simulator's UP42 base URL as the client reached it."""
    return str(request.base_url).rstrip("/") + PREFIX


def storage_base(request: Request, host: str | None) -> str:
    """Where signed URLs point: the API's base, or the same server under another host name
    (``localhost`` for ``127.0.0.1``), so that they are another origin as on the platform."""
    base = base_url(request)
    if host is None:
        return base
    parts = urlsplit(base)
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))


class Signer:
    """Signs and checks URLs to stored objects: an HMAC over the path, the expiry and every other
    query parameter, so that none can be changed without breaking the signature."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(16)

    def sign(
        self, base: str, path: str, expires: float, params: Mapping[str, str] | None = None
    ) -> str:
        """``{base}/{path}?expires=…&signature=…`` and ``params``."""
        stamp, params = f"{expires:.3f}", params or {}
        query = {"expires": stamp, "signature": self._mac(path, stamp, params), **params}
        return f"{base}/{path}?{urlencode(query, quote_via=quote)}"

    def valid(self, path: str, query: Mapping[str, str]) -> bool:
        """Whether ``query`` (a request's) carries a valid signature of ``path``."""
        params = {k: v for k, v in query.items() if k not in ("expires", "signature")}
        mac = self._mac(path, query.get("expires", ""), params)
        return hmac.compare_digest(mac, query.get("signature", ""))

    def _mac(self, path: str, expires: str, params: Mapping[str, str]) -> str:
        extra = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        message = f"{path}\n{expires}\n{extra}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def disposition(filename: str) -> dict[str, str]:
    """The query parameter that names a signed download, as the SDK reads it
    (``utils.get_filename``: the text after ``filename=``, quotes stripped)."""
    return {"response-content-disposition": f'attachment; filename="{filename}"'}
