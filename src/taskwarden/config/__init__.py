"""One validated ``Settings``, read from ``TASKWARDEN_*`` variables at the entry points
(:mod:`.settings`); each platform's own settings (:mod:`.providers`); the field types they share
(:mod:`.fields`)."""

from taskwarden.config.providers import (
    DescartesLabsSettings,
    EarthOneSettings,
    GenericHttpSettings,
    GenericProfile,
    GenericToken,
    GeoboxSettings,
    IsahitSettings,
    OutputUrlSettings,
    ProvidersSettings,
    Up42Settings,
)
from taskwarden.config.settings import (
    ENV_PREFIX,
    ApiSettings,
    HttpSettings,
    PollSettings,
    RateLimitSettings,
    RetentionSettings,
    RetryOverride,
    RetrySettings,
    S3Settings,
    Settings,
    WebhookSettings,
    load_settings,
    open_reads_refusal,
)

__all__ = [
    "ENV_PREFIX",
    "ApiSettings",
    "DescartesLabsSettings",
    "EarthOneSettings",
    "GenericHttpSettings",
    "GenericProfile",
    "GenericToken",
    "GeoboxSettings",
    "HttpSettings",
    "IsahitSettings",
    "OutputUrlSettings",
    "PollSettings",
    "ProvidersSettings",
    "RateLimitSettings",
    "RetentionSettings",
    "RetryOverride",
    "RetrySettings",
    "S3Settings",
    "Settings",
    "Up42Settings",
    "WebhookSettings",
    "load_settings",
    "open_reads_refusal",
]
