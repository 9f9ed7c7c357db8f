"""A module-level Celery app for Celery's own tools, built from this machine's settings:

    celery -A taskwarden.celery_app flower
    celery -A taskwarden.celery_app inspect ping

taskwarden itself builds its app with ``taskwarden.worker.create_app`` at its entry points; this
module exists only because ``celery -A`` wants an importable app. The broker is
``TASKWARDEN_REDIS_URL``, or the embedded Redis that ``taskwarden run`` started (found through
``<data dir>/redis.url``); nothing here starts a Redis of its own.
"""

from __future__ import annotations

from celery import Celery

from taskwarden.config import Settings, load_settings
from taskwarden.errors import ConfigError
from taskwarden.providers import check_settings
from taskwarden.worker import create_app


def broker_url(settings: Settings) -> str:
    """The Redis a running warden uses, by the same rules as every ``taskwarden`` command."""
    if settings.redis_url:
        return settings.redis_url
    url_file = settings.data_dir / "redis.url"
    if url_file.exists():
        return url_file.read_text().strip()
    raise ConfigError(
        f"no broker: set TASKWARDEN_REDIS_URL, or start `taskwarden run` (it writes {url_file})"
    )


def build() -> Celery:
    """The app for this machine's settings and the broker a running warden uses."""
    settings = load_settings()
    check_settings(settings)
    return create_app(settings, broker_url(settings))


def __getattr__(name: str) -> Celery:
    # `celery -A taskwarden.celery_app` reads the module's `app`: built on that first read,
    # so importing this module reads no settings and touches no file
    if name == "app":
        app = build()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
