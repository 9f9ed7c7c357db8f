"""EarthOne's IAM, simulated, and the simulator's configuration.

EarthOne inherited the Descartes Labs accounts service (:mod:`.descarteslabs_accounts`): a
client id and refresh token buy an HS256 JWT at ``POST iam/token``. Its tokens also carry the
``userid`` and ``org`` claims the SDK builds storage namespaces from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from starlette.responses import JSONResponse, Response

from taskwarden.simulator.descarteslabs_accounts import Accounts, AccountsConfig

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock


class EarthOneConfig(AccountsConfig):
    """Auth (see :class:`AccountsConfig`), the user the tokens name, and the platform's guesses
    made configurable: which words ``job_statistics`` counts, the listing's page sizes, and how
    long a signed download URL lives."""

    userid: str = "simuserhash"
    org: str | None = "sim-org"
    # "nonzero": the words with jobs; "every": all eight; "active": pending..canceling only
    statistics_words: Literal["nonzero", "every", "active"] = "nonzero"
    page_size: int = Field(100, ge=1)  # when the request names none
    max_page_size: int = Field(1000, ge=1)
    signed_url_ttl: float = Field(600.0, gt=0)
    # the host signed URLs name (cloud storage is another host); None: the one asked
    storage_host: str | None = None


class Iam(Accounts):
    """EarthOne's IAM: the Descartes Labs accounts service, whose tokens also carry the
    ``userid`` and ``org`` claims the SDK builds namespaces from (``auth/auth.py:809-830``)."""

    config: EarthOneConfig

    def __init__(self, clock: SimClock, config: EarthOneConfig) -> None:
        super().__init__(clock)
        self.config = config

    def extra_claims(self, client_id: str) -> dict[str, Any]:
        config = self.config
        claims = {"iss": "https://iam.earthone.earthdaily.com/", "userid": config.userid,
                  "email": "sim@example.com", "sub": f"sim|{config.userid}"}  # fmt: skip
        return claims | ({"org": config.org} if config.org else {})


def iam_error(status: int, detail: str) -> Response:
    """An OAuth error body, ``{"error", "error_description"}`` (a guess for EarthOne's IAM)."""
    return JSONResponse({"error": "server_error", "error_description": detail}, status)
