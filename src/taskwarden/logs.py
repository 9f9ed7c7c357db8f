"""structlog, configured in one place: JSON off a terminal, readable on one.

Event names are stable, dotted and flat: ``poll.done``, ``archive.done``, ``dispatch.tick``...
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
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


class Redactor:
    """A structlog processor replacing known secrets in every string value of a line, whoever
    logs it (httpx, Celery, redis, ours: the formatter runs it on every record)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if self.secrets:
            for key, value in event.items():
                if isinstance(value, str):
                    event[key] = self.redact(value)
        return event


# Celery's per-task lines ("Task ... received", "... succeeded in") and beat's "Sending due
# task" are INFO; for the dispatch task, which runs every second, they are noise: debug.
_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")
_QUIET_TASKS = ("taskwarden.dispatch",)
# chatty libraries: httpx logs every request with its full URL at INFO (some platforms put keys
# in URLs); kombu's and redis' INFO lines are connection chatter
_QUIET_LOGGERS = ("httpx", "httpcore")


class _Demote(logging.Filter):
    """Turns the per-tick task lines of :data:`_QUIET_TASKS` into debug records, and drops
    what then falls below the configured level."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name in _TASK_LOGGERS:
            text = record.getMessage()
            if any(task in text for task in _QUIET_TASKS):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def configure(settings: Settings, *, stream: Any = None) -> None:
    """Set up structlog and the stdlib root logger once per process (again is harmless).

    Every record goes out through one handler on the root logger and structlog's
    ``ProcessorFormatter``: taskwarden's events and the records of Celery, kombu, uvicorn and
    ``py.warnings`` alike, so that off a terminal every line is one JSON object. Celery is kept
    from configuring logging itself by :func:`taskwarden.worker.app.create_app` (its
    ``setup_logging`` signal)."""
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
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, stamp],
        processors=[
            structlog.stdlib.add_logger_name,  # before the record it reads is removed
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_Demote(level))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    for chatty in _QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    global _json_stream
    _json_stream = stream if as_json else None


_json_stream: Any = None  # where configure() writes JSON lines, if it does


def as_json() -> bool:
    """Whether :func:`configure` chose JSON lines (then banners are left out)."""
    return _json_stream is not None


def say(message: str, logger: str = "celery") -> None:
    """Write ``message`` as one log line straight to the stream, with no lock taken: for what
    Celery prints from its signal handlers (``worker: Warm shutdown``), where logging could
    block. JSON when :func:`configure` chose JSON; the text as it is otherwise."""
    stream = _json_stream
    if stream is None:
        line = message.strip() + "\n"
        stream = sys.__stderr__
    else:
        at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {"event": message.strip(), "level": "info", "logger": logger, "timestamp": at}
        line = json.dumps(event) + "\n"
    # a line lost on the way out is no reason to fail a shutdown
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(stream.fileno(), line.encode())


def get(name: str = "taskwarden") -> Any:
    return structlog.get_logger(name)
