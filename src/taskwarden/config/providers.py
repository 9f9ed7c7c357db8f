"""Each platform's settings, ``TASKWARDEN_PROVIDERS__<PROVIDER>__*``: its URLs, its credentials
and the hosts its output URLs may lead to. :class:`ProvidersSettings` gathers them for
:class:`taskwarden.config.Settings`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from taskwarden.config.fields import (
    BaseUrl,
    OptionalSecret,
    OptionalStr,
    RootUrl,
    comma_list,
    http_url,
)


def _host_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        bare = pattern.removeprefix("*.")
        if not bare or not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", bare) or "*" in bare:
            raise ValueError(f"{pattern!r} is not a host name or '*.' followed by one")
    return value


# output hosts a platform may hand URLs on ("*.example.com": its subdomains); empty: any.
# TASKWARDEN_PROVIDERS__UP42__OUTPUT_HOSTS=*.amazonaws.com,storage.example.com or a JSON list
HostPatterns = Annotated[
    list[str], NoDecode, BeforeValidator(comma_list), AfterValidator(_host_patterns)
]


class OutputUrlSettings(BaseModel):
    """Where URLs the platform hands over (signed downloads, asset links, redirects) may lead;
    the provider's configured API URLs are always allowed (see net/urls.py)."""

    output_hosts: HostPatterns = []
    allow_private_addresses: bool | None = None  # None: TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES


def _both_or_neither(provider: str, info: ValidationInfo, partner: str, value: object) -> None:
    """A credential pair is set whole or not at all; the message names both variables."""
    if (info.data.get(partner) is None) != (value is None):
        prefix = f"TASKWARDEN_PROVIDERS__{provider.upper()}__"
        raise ValueError(
            f"set both {prefix}{partner.upper()} and {prefix}{str(info.field_name).upper()},"
            " or neither"
        )


class GeoboxSettings(OutputUrlSettings):
    """Geobox: a fixed bearer token, an API key, or a username and password that log in at
    ``{base_url}auth/token/`` (the SDK's precedence: token, then API key, then password)."""

    base_url: BaseUrl = "https://api.geobox.ir/v1/"
    token: OptionalSecret = None
    apikey: OptionalSecret = None
    username: OptionalStr = None
    # checked even when unset, so that a username without it is refused
    password: OptionalSecret = Field(None, validate_default=True)

    @field_validator("password")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        _both_or_neither("geobox", info, "username", value)
        return value


# up42-py 4.3 host.py: the API and Keycloak hosts of each region ("REGION"), under "DOMAIN"
UP42_HOSTS = {"eu": ("api.up42", "auth.up42"), "sa": ("api.sa.up42", "auth.sa.up42")}
UP42_KEYCLOAK_TOKEN = "/realms/public/protocol/openid-connect/token"  # noqa: S105 a path


class Up42Settings(OutputUrlSettings):
    """UP42: where its API and logins are (an environment, as up42-py 4.3 names them, or
    explicit URLs), a password grant (username, password), project client credentials
    (project_id, api_key; the v1 era) or one fixed token; and the limits on unpacking results.

    ``environment`` (``eu`` or ``sa``, 4.3's ``region``) and ``domain`` (4.3's ``DOMAIN``)
    choose ``https://api[.sa].up42.<domain>`` for ``base_url`` and Keycloak's
    ``https://auth[.sa].up42.<domain>/realms/public/protocol/openid-connect/token`` for
    ``token_url``, as 4.3's ``host.py`` does. An explicit ``token_url`` wins. A ``base_url``
    that is not an UP42 host (a proxy, the simulator) takes the token endpoint from under
    itself; project credentials default to the v1 ``{base_url}/oauth/token`` (0.34.1).
    """

    environment: Literal["eu", "sa"] = "eu"
    domain: str = Field("com", pattern=r"^[a-z0-9-]+(\.[a-z0-9-]+)*$")
    base_url: RootUrl = "https://api.up42.com"  # when unset: the environment's
    token_url: RootUrl | None = None  # when unset: see above
    username: OptionalStr = None
    # checked even when unset, so that a username (project id) without it is refused
    password: OptionalSecret = Field(None, validate_default=True)
    project_id: OptionalStr = None
    api_key: OptionalSecret = Field(None, validate_default=True)
    token: OptionalSecret = None  # a fixed bearer token, used when no credentials are set
    token_lifetime: float = Field(299.0, gt=0)  # when the token response has no expires_in
    # v2: wait for credits to settle (captured/released) instead of ending at successful/failed
    settle_credits: bool = False
    results_max_bytes: int = Field(20 * 1024**3, ge=1)  # unpacked bytes of one results archive
    # entries of one results archive; items of one v2 collection
    results_max_members: int = Field(10_000, ge=1)
    spool_dir: Path | None = None  # where results tarballs wait while archived; None: $TMPDIR

    @field_validator("password", "api_key")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        partner = "username" if info.field_name == "password" else "project_id"
        _both_or_neither("up42", info, partner, value)
        return value

    @field_validator("base_url")
    @classmethod
    def _same_region(cls, value: str, info: ValidationInfo) -> str:
        # a field validator, so that the error quotes the URL and never the credentials
        environment, domain = info.data.get("environment"), info.data.get("domain")
        theirs = up42_region(value, domain) if domain else None
        if environment is not None and theirs is not None and theirs != environment:
            raise ValueError(
                f"{value} is UP42's {theirs} API: set"
                f" TASKWARDEN_PROVIDERS__UP42__ENVIRONMENT={theirs}"
            )
        return value

    @model_validator(mode="after")
    def _hosts(self) -> Up42Settings:
        api, auth = UP42_HOSTS[self.environment]
        if "base_url" not in self.model_fields_set:
            self.base_url = f"https://{api}.{self.domain}"
        if self.token_url is None:
            if self.username is None and self.project_id is not None:
                self.token_url = f"{self.base_url}/oauth/token"
            elif up42_region(self.base_url, self.domain) is not None:
                self.token_url = f"https://{auth}.{self.domain}{UP42_KEYCLOAK_TOKEN}"
            else:
                self.token_url = f"{self.base_url}{UP42_KEYCLOAK_TOKEN}"
        return self


def up42_region(url: str, domain: str) -> str | None:
    """The UP42 environment whose API host ``url`` is on, or None for any other host."""
    host = urlsplit(url).hostname or ""
    return next((e for e, (api, _) in UP42_HOSTS.items() if host == f"{api}.{domain}"), None)


class DescartesLabsSettings(OutputUrlSettings):
    """Descartes Labs (the 1.x platform): a client id and refresh token that buy short-lived
    JWTs (refreshed before they expire), or one fixed JWT; the URLs of the three services
    used; and how long an export id the platform does not know is given to appear."""

    vector_url: RootUrl = "https://platform.descarteslabs.com/vector/v2"
    storage_url: RootUrl = "https://platform.descarteslabs.com/storage/v1"
    # the SDK 1.12's iam_url (DESCARTESLABS_IAM_URL); POST {accounts_url}/token
    accounts_url: RootUrl = "https://iam.descarteslabs.com"
    client_id: OptionalStr = None
    # checked even when unset, so that a client id without it is refused
    refresh_token: OptionalSecret = Field(None, validate_default=True)
    token: OptionalSecret = None  # a fixed JWT, used when there is no refresh token
    # the SDK's Auth(scope=): sent with the token request (the legacy client id's default
    # when unset: openid name groups org email)
    scope: Annotated[list[str] | None, NoDecode, BeforeValidator(comma_list)] = None
    # refresh this many seconds before the JWT's exp (at most half its lifetime)
    refresh_leeway: float = Field(300.0, ge=0)
    # an export whose result is 404 under a product that exists ends in error once this many
    # seconds have passed since a worker first saw it missing (a running export is 404 too)
    not_found_after: float = Field(3600.0, gt=0)

    @field_validator("refresh_token")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # reported under REFRESH_TOKEN, whose value load_settings never echoes
        _both_or_neither("descarteslabs", info, "client_id", value)
        return value


class EarthOneSettings(OutputUrlSettings):
    """EarthDaily EarthOne: the SDK's environment (its ``EARTHONE_ENV``) and the URLs it implies,
    each overridable; a client id and refresh token (the SDK's "client secret" is the same
    value) that buy JWTs at the IAM host, or one fixed JWT."""

    # earthdaily/earthone/config/settings.toml; "freemium" has no compute service
    env: Literal["production", "staging", "dev", "testing"] = "production"
    platform_url: RootUrl | None = None  # None: https://platform.<env domain>
    iam_url: RootUrl | None = None  # None: https://iam.<env domain>; POST {iam_url}/token
    compute_url: RootUrl | None = None  # None: {platform_url}/compute/v1
    catalog_url: RootUrl | None = None  # None: {platform_url}/metadata/v1/catalog/v2
    client_id: OptionalStr = None
    client_secret: OptionalSecret = None  # the SDK's other name for the refresh token
    # checked even when unset, so that a client id without either is refused
    refresh_token: OptionalSecret = Field(None, validate_default=True)
    token: OptionalSecret = None  # a fixed JWT, used when there is no refresh token
    # the SDK's leeway (auth/auth.py: 500 s), capped at half the JWT's lifetime
    refresh_leeway: float = Field(500.0, ge=0)
    page_size: int = Field(100, ge=1, le=1000)  # jobs per page when listing a function's jobs

    @field_validator("refresh_token")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # reported under REFRESH_TOKEN, whose value load_settings never echoes
        secret = info.data.get("client_secret")
        if value is not None and secret is not None and value != secret:
            raise ValueError(
                "REFRESH_TOKEN and CLIENT_SECRET are one credential for EarthOne (the SDK"
                " takes either) and they differ: set one of them"
            )
        effective = value if value is not None else secret
        if (info.data.get("client_id") is None) != (effective is None):
            prefix = "TASKWARDEN_PROVIDERS__EARTHONE__"
            raise ValueError(
                f"set {prefix}CLIENT_ID and {prefix}REFRESH_TOKEN (or {prefix}CLIENT_SECRET),"
                " or neither"
            )
        return effective

    @model_validator(mode="after")
    def _urls(self) -> EarthOneSettings:
        # the SDK's @format chains: platform and IAM hosts from the environment's domain, the
        # services under the platform; an explicit URL wins, as EARTHONE_<KEY> does for the SDK
        domain = f"{'dev' if self.env == 'testing' else self.env}.earthone.earthdaily.com"
        self.platform_url = self.platform_url or f"https://platform.{domain}"
        self.iam_url = self.iam_url or f"https://iam.{domain}"
        self.compute_url = self.compute_url or f"{self.platform_url}/compute/v1"
        self.catalog_url = self.catalog_url or f"{self.platform_url}/metadata/v1/catalog/v2"
        return self


def _generic_path(value: str | None) -> str | None:
    # imported here, not at the top: taskwarden.providers imports this module
    from taskwarden.jsonpath import compile_path

    if value is not None:
        compile_path(value)
    return value


def _generic_url(value: str | None) -> str | None:
    from taskwarden.jsonpath import template_fields

    if value is not None:
        template_fields(http_url(value))
    return value


class GenericToken(BaseModel):
    """Where the generic provider gets a bearer token: a POST to ``url`` with ``form`` (a form,
    or JSON with ``json_body``) and optional HTTP Basic auth; see docs/providers/http.md."""

    model_config = ConfigDict(extra="forbid")

    url: str
    form: dict[str, SecretStr] = {}
    json_body: bool = False
    basic_username: str | None = None
    basic_password: SecretStr | None = None
    token_path: str = "access_token"  # noqa: S105 a JSON path, not a secret
    expires_in_path: str | None = "expires_in"

    _url = field_validator("url")(_generic_url)
    _paths = field_validator("token_path", "expires_in_path")(_generic_path)


class GenericProfile(BaseModel):
    """One platform for the generic ``http`` provider: its status URL, where each value sits
    in the status JSON, what its words mean, and its credentials (docs/providers/http.md)."""

    model_config = ConfigDict(extra="forbid")

    status_url: str
    status_path: str
    states: dict[Literal["pending", "running", "succeeded", "failed", "cancelled"], list[str]]
    name_path: str | None = None
    progress_path: str | None = None
    progress_total_path: str | None = None
    progress_max: float = Field(100.0, gt=0)  # the progress value that means done
    error_path: str | None = None
    fail_on_error: bool = False  # an error at error_path fails even a "succeeded" word
    outputs_path: str | None = None
    output_url_path: str = "url"
    output_name_path: str | None = "name"
    output_hosts: HostPatterns = []  # allowed output hosts ("*.example.com" too); empty: any
    output_auth: Literal["same_origin", "always", "never"] = "same_origin"
    abort_url: str | None = None
    abort_method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    abort_json: Any = None
    headers: dict[str, SecretStr] = {}
    query: dict[str, SecretStr] = {}
    token: GenericToken | None = None

    _urls = field_validator("status_url", "abort_url")(_generic_url)
    _paths = field_validator(
        "status_path", "name_path", "progress_path", "progress_total_path", "error_path",
        "outputs_path", "output_url_path", "output_name_path",
    )(_generic_path)  # fmt: skip

    @field_validator("status_url")
    @classmethod
    def _has_id(cls, value: str) -> str:
        if "{id}" not in value:
            raise ValueError("must have an {id} placeholder, where the task id goes")
        return value

    @field_validator("states")
    @classmethod
    def _words(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for state, words in value.items():
            for word in words:
                if seen.setdefault(word.casefold(), state) != state:
                    raise ValueError(f"{word!r} is both {seen[word.casefold()]} and {state}")
        if not any(value.get(s) for s in ("succeeded", "failed", "cancelled")):
            raise ValueError("name at least one succeeded, failed or cancelled word")
        return value


class GenericHttpSettings(BaseModel):
    """The generic ``http`` provider: platform profiles by name, and whether a registration
    may bring its own profile in ``params.spec`` (off: any sender could make us fetch any URL)."""

    profiles: dict[str, GenericProfile] = {}
    allow_inline_specs: bool = False
    # may status, output and redirect URLs outside the profiles' own URLs reach non-public
    # addresses? None: TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES
    allow_private_addresses: bool | None = None

    @field_validator("profiles")
    @classmethod
    def _names(cls, value: dict[str, GenericProfile]) -> dict[str, GenericProfile]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"profile name {name!r}: letters, digits, '_', '.', '-' only")
        return value


class IsahitSettings(OutputUrlSettings):
    """isahit lab: the API access id and secret key the SDK logs in with, the project a
    registration without ``params.project_id`` is in, and how long a batch must settle."""

    base_url: BaseUrl = "https://hub-api.isahit.com/"
    access_id: OptionalStr = None
    # checked even when unset, so that an access id without it is refused
    secret_key: OptionalSecret = Field(None, validate_default=True)
    project_id: OptionalStr = None
    # a batch whose tasks are all final ends once it has stayed so, its count unchanged, this
    # many seconds (the SDK creates tasks one at a time; params.expected_tasks ends it sooner)
    batch_settle_seconds: float = Field(300.0, ge=0)

    @field_validator("secret_key")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        _both_or_neither("isahit", info, "access_id", value)
        return value


class ProvidersSettings(BaseModel):
    """Every provider's settings, by the name registrations use."""

    isahit: IsahitSettings = IsahitSettings()
    geobox: GeoboxSettings = GeoboxSettings()
    descarteslabs: DescartesLabsSettings = DescartesLabsSettings()
    earthone: EarthOneSettings = EarthOneSettings()
    http: GenericHttpSettings = GenericHttpSettings()
    up42: Up42Settings = Up42Settings()
