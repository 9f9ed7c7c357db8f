"""One validated ``Settings``, read from ``TASKWARDEN_*`` variables at the entry points.

Nested models use ``__``: ``TASKWARDEN_PROVIDERS__GEOBOX__TOKEN``, ``TASKWARDEN_POLL__MAXIMUM``.
Nothing below the entry points reads the environment; they receive a ``Settings``.
Each platform's own settings (``TASKWARDEN_PROVIDERS__*``) are in
:mod:`taskwarden.config.providers`.
"""

from __future__ import annotations

import ipaddress
import os
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
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from taskwarden.circuit import CircuitPolicy
from taskwarden.config.environment import unknown_variables
from taskwarden.config.fields import OptionalSecret, OptionalStr, comma_list, http_url
from taskwarden.config.providers import ProvidersSettings
from taskwarden.config.redis_url import check as check_redis_url
from taskwarden.errors import ConfigError
from taskwarden.lifecycle import (
    DEFAULT_MAXIMUM_ELAPSED,
    FINAL_STATES,
    RETRYABLE_KINDS,
    PollPolicy,
    RetryPolicy,
)

ENV_PREFIX = "TASKWARDEN_"
MAX_RETRY_SECONDS = 10 * 366 * 24 * 3600.0  # ten years: anything longer is a unit mistake


class HttpSettings(BaseModel):
    """Timeouts and pool limits for every call to a platform."""

    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    write_timeout: float = Field(30.0, gt=0)
    pool_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(100, ge=1)
    # connections per httpx pool; requests are spread over max_connections / this many pools
    # (see net/transport.py). Set it to max_connections for one plain httpx pool.
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
    # seconds one status check may take, all requests included (connect, headers, the whole
    # body; rate-limit waits excluded): a platform that hangs or trickles its answer is cut off
    # there with a retryable error. It must stay under TASKWARDEN_LEASE_SECONDS.
    check_deadline: float = Field(30.0, gt=0, le=3600)

    def policy(self) -> PollPolicy:
        return PollPolicy(initial=self.initial, backoff=self.backoff, maximum=self.maximum)


def _known_kinds(value: list[str] | None) -> list[str] | None:
    for kind in value or ():
        if kind not in RETRYABLE_KINDS:
            known = ", ".join(sorted(RETRYABLE_KINDS))
            raise ValueError(f"{kind!r} is not a retryable error kind; known: {known}")
    return value


# TASKWARDEN_RETRY__NON_RETRYABLE=RateLimited,ResponseTooLarge as well as a JSON list
ErrorKinds = Annotated[
    list[str], NoDecode, BeforeValidator(comma_list), AfterValidator(_known_kinds)
]


class RetrySettings(BaseModel):
    """How failed status checks (and archive runs) are retried before the watch ends in
    ``error``; see :class:`taskwarden.lifecycle.RetryPolicy`. By default bounded by time, not
    count: a platform outage of hours is waited out, checked at least every
    ``maximum_interval`` seconds."""

    initial_interval: float = Field(1.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1)
    maximum_interval: float = Field(60.0, gt=0)
    maximum_attempts: int = Field(0, ge=0)  # 0: no limit on the count
    # seconds since the first failure of a run (at most ten years: set that for "no limit")
    maximum_elapsed: float | None = Field(DEFAULT_MAXIMUM_ELAPSED, gt=0, le=MAX_RETRY_SECONDS)
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


class CircuitSettings(BaseModel):
    """Each provider's circuit breaker (``TASKWARDEN_CIRCUIT__*``); see
    :mod:`taskwarden.circuit`."""

    enabled: bool = True
    failures: int = Field(10, ge=1, le=1_000_000)  # outage failures in a row that open it
    window: float = Field(120.0, gt=0, le=MAX_RETRY_SECONDS)  # longer quiet: count anew
    probe_interval: float = Field(10.0, gt=0, le=86_400)  # seconds between probes while open
    ramp: float = Field(20.0, ge=0, le=86_400)  # seconds to claim the backlog again after

    def policy(self) -> CircuitPolicy:
        return CircuitPolicy(
            enabled=self.enabled,
            failures=self.failures,
            window=self.window,
            probe_interval=self.probe_interval,
            ramp=self.ramp,
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

    _url = field_validator("url")(lambda v: None if v is None else http_url(v))

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
            maximum_elapsed=None,  # bounded by the count alone
        )


DAY = 24 * 3600.0


class RetentionSettings(BaseModel):
    """How long a watch is kept in Redis once it is final (seconds), before the sweep removes
    it with its history, index entries and counts; the archive's manifest stays the durable
    record. ``finished`` applies to every final state without its own value; a registration's
    ``retention`` overrides both. A change applies to watches that end after it."""

    finished: float = Field(30 * DAY, gt=0, le=MAX_RETRY_SECONDS)
    succeeded: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    failed: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    cancelled: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    timed_out: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    error: float | None = Field(None, gt=0, le=MAX_RETRY_SECONDS)
    sweep_limit: int = Field(500, ge=1, le=100_000)  # watches removed per dispatch tick at most
    events: int = Field(100_000, ge=100, le=10_000_000)  # entries kept on the events stream (~)

    def by_state(self) -> dict[str, float]:
        """The retention of each final state (seconds)."""
        return {
            str(state): getattr(self, str(state)) or self.finished for state in sorted(FINAL_STATES)
        }


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
    # serve open reads (read_auth false) on an address other than loopback: refused unless true
    allow_open_reads: bool = False
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
    # None: an embedded Redis under data_dir; redis+sentinel://...: a master Sentinel watches
    redis_url: str | None = None
    archive_url: str | None = None  # None: file://<data_dir>/archive
    s3: S3Settings = S3Settings()
    providers: ProvidersSettings = ProvidersSettings()
    http: HttpSettings = HttpSettings()
    poll: PollSettings = PollSettings()
    retry: RetrySettings = RetrySettings()
    circuit: CircuitSettings = CircuitSettings()
    api: ApiSettings = ApiSettings()
    # per provider, over `retry`: e.g. TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ATTEMPTS=3
    retry_policies: dict[str, RetryOverride] = Field(default_factory=dict)
    webhooks: WebhookSettings = WebhookSettings()
    retention: RetentionSettings = RetentionSettings()

    # per provider, e.g. TASKWARDEN_RATE_LIMITS__GEOBOX__RATE=20, ..._BURST=5; absent: unlimited
    rate_limits: dict[str, RateLimitSettings] = Field(default_factory=dict)

    dispatch_interval: float = Field(1.0, gt=0, le=3600)
    dispatch_batch_size: int = Field(100, ge=1, le=10_000)  # polls per Celery message
    dispatch_max_claims: int = Field(50_000, ge=1)  # polls claimed per provider per tick
    max_queued_batches: int = Field(200, ge=1)  # poll messages waiting before dispatch holds off
    poll_concurrency: int = Field(64, ge=1, le=10_000)  # requests in flight per poll message
    lease_seconds: float = Field(120.0, gt=0)  # a poll not committed by then is dispatched again
    # checks of one provider claimed and not yet committed, at most: a platform that hangs
    # holds no more of the poll workers than this (see README, "How it works")
    dispatch_max_in_flight: int = Field(1000, ge=1)
    archive_lease_seconds: float = Field(900.0, gt=0)
    history_limit: int = Field(100, ge=1, le=100_000)
    default_timeout: float | None = Field(None, gt=0)  # seconds; None: watch until final
    # seconds before the Redis broker redelivers a message its worker never acknowledged (the
    # worker died holding it); archive runs are guarded against the duplicates this makes
    visibility_timeout: int = Field(300, ge=60)
    # take messages with taskwarden.broker's atomic fetch; false: Celery's stock Redis transport,
    # which loses a message whose worker is killed as it takes it (for a Redis-compatible
    # server without Lua or BLMOVE, or to compare)
    atomic_fetch: bool = True
    max_output_bytes: int | None = Field(64 * 1024**3, ge=1)  # per output; None: no limit
    archive_chunk_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @model_validator(mode="after")
    def _lease_outlives_check(self) -> Settings:
        if self.lease_seconds <= self.poll.check_deadline:
            raise ValueError(
                f"TASKWARDEN_LEASE_SECONDS ({self.lease_seconds:g}) must exceed"
                f" TASKWARDEN_POLL__CHECK_DEADLINE ({self.poll.check_deadline:g}): a check"
                " that outlives its lease can never commit"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value:
            check_redis_url(value)
        return value or None

    @property
    def resolved_archive_url(self) -> str:
        if self.archive_url:
            return self.archive_url
        return (self.data_dir.resolve() / "archive").as_uri()

    def store_options(self) -> dict[str, Any]:
        """What a :class:`~taskwarden.store.Store` is built with from these settings (history
        length, retention by final state, the events stream's cap)."""
        return {
            "history_limit": self.history_limit,
            "retention": self.retention.by_state(),
            "max_events": self.retention.events,
        }

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


LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    host = host.strip().removeprefix("[").removesuffix("]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere


def open_reads_refusal(api: ApiSettings, host: str | None = None) -> str | None:
    """Why the API must not listen on ``host`` (default: ``api.host``), or None: reads answer
    without the token unless READ_AUTH, so beyond loopback they need an explicit yes."""
    host = api.host if host is None else host
    if is_loopback(host) or api.read_auth or api.allow_open_reads:
        return None
    return (
        f"the API would listen on {host!r}, beyond loopback, with reads open to anyone who can "
        "reach it (watches, labels, platform details, archive URLs): set "
        "TASKWARDEN_API__READ_AUTH=true to require the token for reads too, or "
        "TASKWARDEN_API__ALLOW_OPEN_READS=true if the network in front of it is trusted"
    )


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into a ``ConfigError``
    that names the variable to fix. A ``TASKWARDEN_*`` variable that names no setting (a typo)
    is refused too, with the nearest valid name."""
    unknown = unknown_variables(os.environ, Settings, ENV_PREFIX)
    if unknown:
        raise ConfigError("unknown settings:\n  " + "\n  ".join(unknown))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # a rule over several settings: its message names them
                lines.append(err["msg"].removeprefix("Value error, "))
                continue
            var = ENV_PREFIX + "__".join(str(part) for part in err["loc"]).upper()
            secret = any(word in var for word in ("TOKEN", "KEY", "SECRET", "PASSWORD"))
            got = "" if secret else f" (got {err.get('input')!r})"
            lines.append(f"{var}: {err['msg']}{got}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
