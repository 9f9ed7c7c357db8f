"""One validated ``Settings``, read from ``TASKWARDEN_*`` variables at the entry points.

Nested models use ``__``: ``TASKWARDEN_PROVIDERS__GEOBOX__TOKEN``, ``TASKWARDEN_POLL__MAXIMUM``.
Nothing below the entry points reads the environment; they receive a ``Settings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskwarden.errors import ConfigError
from taskwarden.lifecycle import PollPolicy, RetryPolicy

ENV_PREFIX = "TASKWARDEN_"


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


class PollSettings(BaseModel):
    """How often a healthy watch is checked (seconds)."""

    initial: float = Field(2.0, gt=0)
    backoff: float = Field(1.5, ge=1)
    maximum: float = Field(60.0, gt=0)

    def policy(self) -> PollPolicy:
        return PollPolicy(initial=self.initial, backoff=self.backoff, maximum=self.maximum)


class RetrySettings(BaseModel):
    """How failed status checks are retried before the watch ends in ``error``."""

    initial_interval: float = Field(1.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1)
    maximum_interval: float = Field(60.0, gt=0)
    maximum_attempts: int = Field(8, ge=1)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=self.initial_interval,
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=self.maximum_interval,
            maximum_attempts=self.maximum_attempts,
        )


class GeoboxSettings(BaseModel):
    """Geobox: bearer token or API key (one is needed for the real service)."""

    base_url: str = "https://api.geobox.ir/v1/"
    token: SecretStr | None = None
    apikey: SecretStr | None = None

    @field_validator("base_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value if value.endswith("/") else value + "/"


class ProvidersSettings(BaseModel):
    geobox: GeoboxSettings = GeoboxSettings()


class S3Settings(BaseModel):
    """Endpoint and credentials for an ``s3://`` archive (MinIO, moto, AWS)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    allow_http: bool = False


class RateLimitSettings(BaseModel):
    """A provider's request rate across the whole cluster."""

    rate: float = Field(gt=0, le=100_000)  # requests per second
    burst: int = Field(1, ge=1, le=100_000)  # requests allowed at once ahead of the rate


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
    visibility_timeout: int = Field(3600, ge=60)  # Redis broker redelivery of unacked messages
    archive_chunk_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @property
    def resolved_archive_url(self) -> str:
        if self.archive_url:
            return self.archive_url
        return (self.data_dir.resolve() / "archive").as_uri()

    def poll_policy(self) -> PollPolicy:
        return self.poll.policy()

    def retry_policy(self) -> RetryPolicy:
        return self.retry.policy()


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
