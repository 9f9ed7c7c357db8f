"""The Celery app: its configuration (:func:`celery_conf`), its tasks (:mod:`.tasks`) and the
signals that build and close each worker process's :class:`~taskwarden.service.Runtime`.

Producers need nothing of this project: ``Celery(broker=url).send_task("taskwarden.track",
kwargs={"provider": "geobox", "remote_id": "..."})`` lands on Celery's default queue, which
every taskwarden worker consumes.
"""

from __future__ import annotations

import os
from typing import Any

import celery.apps.worker
from celery import Celery, signals

from taskwarden import keys, logs
from taskwarden.config import Settings
from taskwarden.config.redis_url import celery_broker
from taskwarden.service import Runtime
from taskwarden.worker import broker, heartbeat
from taskwarden.worker.tasks import define_tasks

# One runtime per worker process, built after fork (``worker_process_init``) and keyed by pid
# so a forked child never reuses its parent's sockets or event loop.
_runtime: dict[int, Runtime] = {}


def create_app(settings: Settings, redis_url: str) -> Celery:
    """The Celery app for a resolved Redis URL (the embedded server's, if any)."""
    broker_url, transport_options = celery_broker(redis_url)
    app = Celery("taskwarden", broker=broker_url, set_as_current=False)
    app.conf.update(celery_conf(settings, transport_options))
    app.conf.taskwarden_redis_url = redis_url  # the store's URL (Celery's broker_url may differ)
    define_tasks(app, settings, lambda: runtime(app))
    _wire_signals(app, redis_url)
    return app


def celery_conf(
    settings: Settings, transport_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Celery's settings for taskwarden: late acks, prefetch 1, JSON only, no results, the
    task routes of :mod:`taskwarden.keys`, and beat's dispatch schedule. ``transport_options``:
    what the broker URL needs (:func:`~taskwarden.config.redis_url.celery_broker`; a
    ``master_name`` means Redis Sentinel)."""
    options = transport_options or {}
    # kombu's Redis transport, but a worker killed while fetching cannot lose the message;
    # stock (None): kombu's "redis", or its "sentinel", as the broker URL's scheme says
    transport = failover = None
    if settings.atomic_fetch:
        sentinel = "master_name" in options
        transport = f"taskwarden.worker.broker:{'SentinelTransport' if sentinel else 'Transport'}"
        failover = broker.NoSwitch if sentinel else None  # kombu wants the callable
    return {
        "taskwarden_settings": settings,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_transport": transport,
        "broker_failover_strategy": failover,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout, **options},
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # dead-letters what Celery would drop: undecodable messages, unknown tasks
        "worker_consumer": "taskwarden.worker.consumer:Consumer",
        "task_routes": {
            keys.TASK_DISPATCH: {"queue": keys.QUEUE_DISPATCH},
            keys.TASK_POLL: {"queue": keys.QUEUE_POLL},
            keys.TASK_ABORT: {"queue": keys.QUEUE_POLL},
            keys.TASK_ARCHIVE: {"queue": keys.QUEUE_ARCHIVE},
            keys.TASK_WEBHOOK: {"queue": keys.QUEUE_WEBHOOK},
        },
        "beat_schedule": {
            "dispatch": {
                "task": keys.TASK_DISPATCH,
                "schedule": settings.dispatch_interval,
                # a dispatch that waited longer than a few ticks is pointless: a newer one follows
                "options": {"expires": max(5.0, 5 * settings.dispatch_interval)},
            }
        },
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
    }


def runtime(app: Celery) -> Runtime:
    """This process's runtime, built on first use."""
    pid = os.getpid()
    if pid not in _runtime:
        _runtime.clear()
        _runtime[pid] = Runtime(app.conf.taskwarden_settings, app.conf.taskwarden_redis_url)
    return _runtime[pid]


_log_settings: dict[str, Settings] = {}


def _setup_logging(**_: Any) -> None:
    """Celery's ``setup_logging``: with a receiver connected, Celery configures no logging of
    its own (no handler on the root logger, no redirected stdout), in the main process and in
    every forked child; taskwarden's configuration does it instead."""
    if "settings" in _log_settings:
        logs.configure(_log_settings["settings"])


def _say(msg: str, f: Any = None) -> None:
    logs.say(msg, "celery.apps.worker")


def _wire_signals(app: Celery, redis_url: str) -> None:
    """Build a worker process's runtime after the fork and close it at the process's exit; the
    node's main process sends the worker heartbeat. Celery's log records go through
    :func:`taskwarden.logs.configure`, and what its signal handlers print ("worker: Warm
    shutdown") comes out as a log line too."""
    _log_settings["settings"] = app.conf.taskwarden_settings
    signals.setup_logging.connect(_setup_logging, weak=False, dispatch_uid="taskwarden.logs")
    celery.apps.worker.safe_say = _say  # written to the fd, from signal handlers: see logs.say
    heartbeat.install(redis_url)  # only a worker node sends worker_ready

    def _init_process(**_: Any) -> None:
        _runtime.clear()  # a forked child must never reuse its parent's sockets or loop
        runtime(app)

    signals.worker_process_init.connect(_init_process, weak=False)
    signals.worker_process_shutdown.connect(_close_runtime)  # once: Celery dedupes receivers


def _close_runtime(**_: Any) -> None:
    rt = _runtime.pop(os.getpid(), None)
    if rt is not None:
        rt.close()
