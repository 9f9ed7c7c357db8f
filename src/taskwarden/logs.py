"""structlog, configured in one place: JSON off a terminal, readable on one.

Event names are stable, dotted and flat: ``poll.done``, ``archive.done``, ``dispatch.tick``...
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, SecretStr

from taskwarden.config import Settings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}  # fmt: skip


def secrets_of(settings: Settings) -> list[str]:
    """Every credential the settings hold (SecretStr values, the Redis password), longest first."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    if settings.redis_url:
        found.append(urlsplit(settings.redis_url).password or "")
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


class Redactor(logging.Filter):
    """Replaces known secrets in log records, whoever logs them (httpx, Celery, redis, ours)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
        return True

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if self.secrets:
            for key, value in event.items():
                if isinstance(value, str):
                    event[key] = self.redact(value)
        return event


def configure(settings: Settings, *, stream: Any = None) -> None:
    """Set up structlog and the stdlib root logger (Celery logs through it) once per process."""
    stream = stream or sys.stderr
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not stream.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    level = _LEVELS[settings.log_level]
    redactor = Redactor(secrets_of(settings))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            redactor,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=stream, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    # httpx logs every request with its full URL at INFO; some platforms put keys in URLs
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def get(name: str = "taskwarden") -> Any:
    return structlog.get_logger(name)
