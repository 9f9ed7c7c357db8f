"""structlog, configured in one place: JSON off a terminal, readable on one.

Event names are stable, dotted and flat: ``poll.done``, ``archive.done``, ``dispatch.tick``...
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from taskwarden.config import Settings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}  # fmt: skip


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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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


def get(name: str = "taskwarden") -> Any:
    return structlog.get_logger(name)
