"""One validated ``Settings``, read from ``TASKWARDEN_*`` variables at the entry points.

Nested models use ``__``: ``TASKWARDEN_PROVIDERS__GEOBOX__TOKEN``, ``TASKWARDEN_POLL__MAXIMUM``.
Nothing below the entry points reads the environment; they receive a ``Settings``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from taskwarden.errors import ConfigError
from taskwarden.lifecycle import RETRYABLE_KINDS, PollPolicy, RetryPolicy

ENV_PREFIX = "TASKWARDEN_"
MAX_RETRY_SECONDS = 10 * 366 * 24 * 3600.0  # ten years: anything longer is a unit mistake


def _empty_is_unset(value: object) -> object:
    # `FOO=` (as compose writes `${FOO:-}`) means "not set", never "an empty credential"
    return None if value == "" else value


OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_is_unset)]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


# an API root that relative paths are joined to (one trailing slash), or a service root that
# paths are appended to with their own slash (none)
BaseUrl = Annotated[str, AfterValidator(lambda v: _http_url(v).rstrip("/") + "/")]
RootUrl = Annotated[str, AfterValidator(lambda v: _http_url(v).rstrip("/"))]


def _host_list(value: object) -> object:
    # TASKWARDEN_PROVIDERS__UP42__OUTPUT_HOSTS=*.amazonaws.com,storage.example.com or JSON
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _host_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        bare = pattern.removeprefix("*.")
        if not bare or not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", bare) or "*" in bare:
            raise ValueError(f"{pattern!r} is not a host name or '*.' followed by one")
    return value


# output hosts a platform may hand URLs on ("*.example.com": its subdomains); empty: any
HostPatterns = Annotated[
    list[str], NoDecode, BeforeValidator(_host_list), AfterValidator(_host_patterns)
]


class OutputUrlSettings(BaseModel):
    """Where URLs the platform hands over (signed downloads, asset links, redirects) may lead;
    the provider's configured API URLs are always allowed (see providers/urls.py)."""

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


class HttpSettings(BaseModel):
    """Timeouts and pool limits for every call to a platform."""

    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    write_timeout: float = Field(30.0, gt=0)
    pool_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(100, ge=1)
    # connections per httpx pool; requests are spread over max_connections / this many pools
    # (see providers/transport.py). Set it to max_connections for one plain httpx pool.
    connections_per_pool: int = Field(2, ge=1)
    # may URLs a platform hands over (downloads, redirects) reach loopback, private or
    # link-local addresses? A provider's own ALLOW_PRIVATE_ADDRESSES overrides this
    allow_private_addresses: bool = False
    # in-call retries of one idempotent request (GET/HEAD, and the opening of a download) on a
    # connection failure, 5xx or a 429 whose Retry-After is short; the poll schedule does the rest
    retries: int = Field(2, ge=0, le=10)
    retry_backoff: float = Field(0.25, ge=0, le=60)  # ceiling of the first full-jitter delay
    retry_max_wait: float = Field(2.0, ge=0, le=300)  # longer waits (Retry-After) are not slept
    max_json_bytes: int = Field(16 * 1024**2, ge=1024)  # a status or metadata response body


class PollSettings(BaseModel):
    """How often a healthy watch is checked (seconds)."""

    initial: float = Field(2.0, gt=0)
    backoff: float = Field(1.5, ge=1)
    maximum: float = Field(60.0, gt=0)

    def policy(self) -> PollPolicy:
        return PollPolicy(initial=self.initial, backoff=self.backoff, maximum=self.maximum)


def _kinds(value: object) -> object:
    # TASKWARDEN_RETRY__NON_RETRYABLE=RateLimited,ResponseTooLarge as well as a JSON list
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _known_kinds(value: list[str] | None) -> list[str] | None:
    for kind in value or ():
        if kind not in RETRYABLE_KINDS:
            known = ", ".join(sorted(RETRYABLE_KINDS))
            raise ValueError(f"{kind!r} is not a retryable error kind; known: {known}")
    return value


ErrorKinds = Annotated[list[str], NoDecode, BeforeValidator(_kinds), AfterValidator(_known_kinds)]


class RetrySettings(BaseModel):
    """How failed status checks (and archive runs) are retried before the watch ends in
    ``error``; see :class:`taskwarden.lifecycle.RetryPolicy`."""

    initial_interval: float = Field(1.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1)
    maximum_interval: float = Field(60.0, gt=0)
    maximum_attempts: int = Field(8, ge=0)  # 0: no limit on the count
    maximum_elapsed: float | None = Field(None, gt=0)  # seconds since the first failure
    non_retryable: ErrorKinds = []

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=self.initial_interval,
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=self.maximum_interval,
            maximum_attempts=self.maximum_attempts,
            maximum_elapsed=self.maximum_elapsed,
            non_retryable=frozenset(self.non_retryable),
        )


class RetryOverride(BaseModel):
    """Some fields of a retry policy, replacing those of the policy below it: a provider's
    (``TASKWARDEN_RETRY_POLICIES__<PROVIDER>__*``) over the global one, a watch's (the
    registration's ``retry``) over its provider's. Unset fields are inherited."""

    model_config = ConfigDict(extra="forbid")

    initial_interval: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    backoff_coefficient: float | None = Field(None, ge=1, le=100)
    maximum_interval: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    maximum_attempts: int | None = Field(None, ge=0, le=1_000_000)
    maximum_elapsed: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    non_retryable: ErrorKinds | None = None

    def fields(self) -> dict[str, Any]:
        """The fields that are set, JSON-ready (what a watch stores)."""
        return self.model_dump(exclude_none=True)


class GeoboxSettings(OutputUrlSettings):
    """Geobox: bearer token or API key (one is needed for the real service)."""

    base_url: BaseUrl = "https://api.geobox.ir/v1/"
    token: OptionalSecret = None
    apikey: OptionalSecret = None


class Up42Settings(OutputUrlSettings):
    """UP42: a password grant (username, password), project client credentials (project_id,
    api_key) or one fixed token; and the limits on unpacking results tarballs."""

    base_url: RootUrl = "https://api.up42.com"
    token_url: RootUrl | None = None  # None: {base_url}/oauth/token
    username: OptionalStr = None
    # checked even when unset, so that a username (project id) without it is refused
    password: OptionalSecret = Field(None, validate_default=True)
    project_id: OptionalStr = None
    api_key: OptionalSecret = Field(None, validate_default=True)
    token: OptionalSecret = None  # a fixed bearer token, used when no credentials are set
    token_lifetime: float = Field(299.0, gt=0)  # when the token response has no expires_in
    # v2: wait for credits to settle (captured/released) instead of ending at successful/failed
    settle_credits: bool = False
    results_max_bytes: int = Field(20 * 1024**3, ge=1)  # unpacked bytes of one results tarball
    results_max_members: int = Field(10_000, ge=1)
    spool_dir: Path | None = None  # where results tarballs wait while archived; None: $TMPDIR

    @field_validator("password", "api_key")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        partner = "username" if info.field_name == "password" else "project_id"
        _both_or_neither("up42", info, partner, value)
        return value


class DescartesLabsSettings(OutputUrlSettings):
    """Descartes Labs: a client id and refresh token that buy short-lived JWTs (refreshed
    before they expire), or one fixed JWT; and the URLs of the three services used."""

    vector_url: RootUrl = "https://platform.descarteslabs.com/vector/v2"
    storage_url: RootUrl = "https://platform.descarteslabs.com/storage/v1"
    accounts_url: RootUrl = "https://accounts.descarteslabs.com"  # POST {accounts_url}/token
    client_id: OptionalStr = None
    # checked even when unset, so that a client id without it is refused
    refresh_token: OptionalSecret = Field(None, validate_default=True)
    token: OptionalSecret = None  # a fixed JWT, used when there is no refresh token
    # refresh this many seconds before the JWT's exp (at most half its lifetime)
    refresh_leeway: float = Field(300.0, ge=0)

    @field_validator("refresh_token")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # reported under REFRESH_TOKEN, whose value load_settings never echoes
        _both_or_neither("descarteslabs", info, "client_id", value)
        return value


def _generic_path(value: str | None) -> str | None:
    # imported here, not at the top: taskwarden.providers imports this module
    from taskwarden.providers.jsonpath import compile_path

    if value is not None:
        compile_path(value)
    return value


def _generic_url(value: str | None) -> str | None:
    from taskwarden.providers.jsonpath import template_fields

    if value is not None:
        template_fields(_http_url(value))
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
    """isahit lab: the API access id and secret key the SDK logs in with, and the project a
    registration without ``params.project_id`` is in."""

    base_url: BaseUrl = "https://hub-api.isahit.com/"
    access_id: OptionalStr = None
    # checked even when unset, so that an access id without it is refused
    secret_key: OptionalSecret = Field(None, validate_default=True)
    project_id: OptionalStr = None

    @field_validator("secret_key")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        _both_or_neither("isahit", info, "access_id", value)
        return value


class ProvidersSettings(BaseModel):
    isahit: IsahitSettings = IsahitSettings()
    geobox: GeoboxSettings = GeoboxSettings()
    descarteslabs: DescartesLabsSettings = DescartesLabsSettings()
    http: GenericHttpSettings = GenericHttpSettings()
    up42: Up42Settings = Up42Settings()


class S3Settings(BaseModel):
    """Endpoint and credentials for an ``s3://`` archive (MinIO, moto, AWS)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: OptionalSecret = None
    secret_access_key: OptionalSecret = None
    allow_http: bool = False


class WebhookSettings(BaseModel):
    """Signed POSTs on final states: to every watch's own ``webhook`` URL, and to ``url`` for
    every watch; retried with full-jitter backoff until delivered or ``max_attempts`` tried."""

    url: OptionalStr = None  # called for every watch that reaches a final state
    # the HMAC-SHA256 key of X-Taskwarden-Signature; required by url, and by per-watch URLs
    secret: OptionalSecret = Field(None, validate_default=True)
    timeout: float = Field(10.0, gt=0, le=300)  # seconds per delivery attempt, all included
    max_attempts: int = Field(10, ge=1, le=1000)
    initial_interval: float = Field(5.0, gt=0)  # ceiling of the first retry's delay
    backoff_coefficient: float = Field(2.0, ge=1)
    maximum_interval: float = Field(3600.0, gt=0)
    batch_size: int = Field(50, ge=1, le=1000)  # deliveries per task, sent concurrently
    # may webhook URLs reach loopback, private or link-local addresses? None: as
    # TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES says
    allow_private_addresses: bool | None = None

    _url = field_validator("url")(lambda v: None if v is None else _http_url(v))

    @field_validator("secret")
    @classmethod
    def _signed(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("url") is not None and value is None:
            raise ValueError(
                "TASKWARDEN_WEBHOOKS__URL is set: set TASKWARDEN_WEBHOOKS__SECRET too,"
                " the key webhooks are signed with"
            )
        return value

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=self.initial_interval,
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=self.maximum_interval,
            maximum_attempts=self.max_attempts,
        )


class RateLimitSettings(BaseModel):
    """A provider's request rate across the whole cluster."""

    rate: float = Field(gt=0, le=100_000)  # requests per second
    burst: int = Field(1, ge=1, le=100_000)  # requests allowed at once ahead of the rate


class ApiSettings(BaseModel):
    """The HTTP API (``taskwarden api``, and part of ``taskwarden run``)."""

    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)  # 0: any free port (tests)
    # bearer token for writes (and reads with read_auth); unset: generated into
    # <data_dir>/api-token (mode 0600), which the client reads too
    token: OptionalSecret = None
    read_auth: bool = False  # also require the token to read
    ready_max_lag: float = Field(60.0, gt=0)  # /readyz fails when dispatch lags more (seconds)


class Settings(BaseSettings):
    """Everything taskwarden can be told, validated once."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "taskwarden"
        )
    )
    redis_url: str | None = None  # None: an embedded Redis under data_dir
    archive_url: str | None = None  # None: file://<data_dir>/archive
    s3: S3Settings = S3Settings()
    providers: ProvidersSettings = ProvidersSettings()
    http: HttpSettings = HttpSettings()
    poll: PollSettings = PollSettings()
    retry: RetrySettings = RetrySettings()
    api: ApiSettings = ApiSettings()
    # per provider, over `retry`: e.g. TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ATTEMPTS=3
    retry_policies: dict[str, RetryOverride] = Field(default_factory=dict)
    webhooks: WebhookSettings = WebhookSettings()

    # per provider, e.g. TASKWARDEN_RATE_LIMITS__GEOBOX__RATE=20, ..._BURST=5; absent: unlimited
    rate_limits: dict[str, RateLimitSettings] = Field(default_factory=dict)

    dispatch_interval: float = Field(1.0, gt=0, le=3600)
    dispatch_batch_size: int = Field(100, ge=1, le=10_000)  # polls per Celery message
    dispatch_max_claims: int = Field(50_000, ge=1)  # polls claimed per provider per tick
    max_queued_batches: int = Field(200, ge=1)  # poll messages waiting before dispatch holds off
    poll_concurrency: int = Field(64, ge=1, le=10_000)  # requests in flight per poll message
    lease_seconds: float = Field(120.0, gt=0)  # a poll not committed by then is dispatched again
    archive_lease_seconds: float = Field(900.0, gt=0)
    history_limit: int = Field(100, ge=1, le=100_000)
    default_timeout: float | None = Field(None, gt=0)  # seconds; None: watch until final
    # seconds before the Redis broker redelivers a message its worker never acknowledged (the
    # worker died holding it); archive runs are guarded against the duplicates this makes
    visibility_timeout: int = Field(300, ge=60)
    max_output_bytes: int | None = Field(64 * 1024**3, ge=1)  # per output; None: no limit
    archive_chunk_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("retry_policies")
    @classmethod
    def _retry_providers(cls, value: dict[str, RetryOverride]) -> dict[str, RetryOverride]:
        from taskwarden.providers import names  # here: taskwarden.providers imports this module

        known = names()
        for provider in value:
            if provider not in known:
                raise ValueError(f"unknown provider {provider!r}; known: {', '.join(known)}")
        return value

    @property
    def resolved_archive_url(self) -> str:
        if self.archive_url:
            return self.archive_url
        return (self.data_dir.resolve() / "archive").as_uri()

    def poll_policy(self) -> PollPolicy:
        return self.poll.policy()

    def retry_policy(
        self, provider: str | None = None, watch: Mapping[str, Any] | None = None
    ) -> RetryPolicy:
        """The retry policy of a watch: the global one, overridden by its provider's
        ``retry_policies`` entry, overridden by the watch's own ``retry`` fields."""
        policy = self.retry.policy()
        if provider is not None and provider in self.retry_policies:
            policy = policy.overridden(self.retry_policies[provider].fields())
        return policy.overridden(watch)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into a ``ConfigError``
    that names the variable to fix."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            var = ENV_PREFIX + "__".join(str(part) for part in err["loc"]).upper()
            secret = any(word in var for word in ("TOKEN", "KEY", "SECRET", "PASSWORD"))
            got = "" if secret else f" (got {err.get('input')!r})"
            lines.append(f"{var}: {err['msg']}{got}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
