"""The Celery app and its tasks. Tasks are thin: take ids, call one service function.

Producers need nothing of this project: ``Celery(broker=url).send_task("taskwarden.track",
kwargs={"provider": "geobox", "remote_id": "..."})`` lands on Celery's default queue, which
every taskwarden worker consumes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from celery import Celery, signals

from taskwarden import keys, logs, service, webhooks
from taskwarden.config import Settings
from taskwarden.errors import InvalidRegistration
from taskwarden.service import Runtime, abort_remote, archive_watch, dispatch, poll_batch
from taskwarden.store import Claim, Store
from taskwarden.worker import heartbeat

log = logs.get("taskwarden.tasks")
T = TypeVar("T")
REDIS_PATIENCE = 120.0  # seconds a registration waits for Redis to come back

# One runtime per worker process, built after fork (``worker_process_init``) and keyed by pid
# so a forked child never reuses its parent's sockets or event loop.
_runtime: dict[int, Runtime] = {}


def runtime(app: Celery) -> Runtime:
    pid = os.getpid()
    if pid not in _runtime:
        _runtime.clear()
        _runtime[pid] = Runtime(app.conf.taskwarden_settings, app.conf.broker_url)
    return _runtime[pid]


def _close_runtime(**_: Any) -> None:
    rt = _runtime.pop(os.getpid(), None)
    if rt is not None:
        rt.close()


def create_app(settings: Settings, redis_url: str) -> Celery:
    """The Celery app for a resolved Redis URL (the embedded server's, if any)."""
    app = Celery("taskwarden", broker=redis_url, set_as_current=False)
    app.conf.update(
        taskwarden_settings=settings,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # kombu's Redis transport, but a worker killed while fetching cannot lose the message
        broker_transport="taskwarden.worker.broker:Transport" if settings.atomic_fetch else None,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # dead-letters what Celery would drop: undecodable messages, unknown tasks
        worker_consumer="taskwarden.worker.consumer:Consumer",
        task_routes={
            keys.TASK_DISPATCH: {"queue": keys.QUEUE_DISPATCH},
            keys.TASK_POLL: {"queue": keys.QUEUE_POLL},
            keys.TASK_ABORT: {"queue": keys.QUEUE_POLL},
            keys.TASK_ARCHIVE: {"queue": keys.QUEUE_ARCHIVE},
            keys.TASK_WEBHOOK: {"queue": keys.QUEUE_WEBHOOK},
        },
        beat_schedule={
            "dispatch": {
                "task": keys.TASK_DISPATCH,
                "schedule": settings.dispatch_interval,
                # a dispatch that waited longer than a few ticks is pointless: a newer one follows
                "options": {"expires": max(5.0, 5 * settings.dispatch_interval)},
            }
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )

    heartbeat.install(redis_url)  # only a worker node sends worker_ready

    @signals.worker_process_init.connect(weak=False)
    def _init_process(**_: Any) -> None:
        _runtime.clear()  # a forked child must never reuse its parent's sockets or loop
        runtime(app)

    def send_polls(provider: str, claims: Sequence[Claim]) -> None:
        app.send_task(keys.TASK_POLL, args=[provider, [[c.watch_id, c.fence] for c in claims]])

    def send_archive(claim: Claim) -> None:
        app.send_task(keys.TASK_ARCHIVE, args=[claim.watch_id, claim.fence])

    def send_abort(watch_id: str) -> None:
        app.send_task(keys.TASK_ABORT, args=[watch_id])

    def send_webhooks(ids: Sequence[str]) -> None:
        app.send_task(keys.TASK_WEBHOOK, args=[list(ids)])

    @app.task(name=keys.TASK_TRACK)
    def track(*args: Any, **kwargs: Any) -> dict[str, Any]:
        store = runtime(app).store
        if args:
            reason = "send the registration as keyword arguments (kwargs)"
            body = {"args": args, "kwargs": kwargs}
            log.warning("track.invalid", error=reason)
            _until_redis_answers(lambda: store.dead_letter(time.time(), "queue", reason, body))
            return {"error": reason}
        try:
            watch, created = _until_redis_answers(
                lambda: service.register(store, settings, kwargs, source="queue")
            )
        except InvalidRegistration as exc:
            log.warning("track.invalid", error=str(exc))
            return {"error": str(exc)}
        log.info(
            "track.done",
            watch_id=watch.id,
            provider=watch.provider,
            remote_id=watch.remote_id,
            created=created,
        )
        return {"watch_id": watch.id, "created": created}

    @app.task(name=keys.TASK_DISPATCH)
    def dispatch_task() -> dict[str, Any]:
        rt = runtime(app)
        now = time.time()
        rt.store.heartbeat("dispatch", now, ttl=max(30.0, 10 * settings.dispatch_interval))
        with app.connection_for_write() as conn:
            queued = conn.default_channel.client.llen(keys.QUEUE_POLL)
        result = dispatch(
            rt.store,
            send_polls,
            now=now,
            lease_seconds=settings.lease_seconds,
            batch_size=settings.dispatch_batch_size,
            max_claims=settings.dispatch_max_claims,
            queued_batches=int(queued),
            max_queued_batches=settings.max_queued_batches,
        )
        try:
            webhooks.pump(rt.store, settings, now, send_webhooks)
        except redis.RedisError:  # the polls went out; the next tick picks the webhooks up
            log.exception("webhooks.pump_failed")
        return {"claimed": result.claimed, "batches": result.batches, "reaped": result.reaped}

    @app.task(name=keys.TASK_POLL)
    def poll(provider: str, items: list[list[Any]]) -> dict[str, int]:
        claims = [Claim(str(wid), int(fence)) for wid, fence in items]
        result = poll_batch(runtime(app), provider, claims, send_archive, send_abort)
        return vars(result)

    @app.task(name=keys.TASK_ARCHIVE)
    def archive(watch_id: str, fence: int) -> str | None:
        state = archive_watch(runtime(app), Claim(watch_id, int(fence)))
        return None if state is None else str(state)

    @app.task(name=keys.TASK_WEBHOOK)
    def webhook(ids: list[str]) -> int:
        rt = runtime(app)
        rt.flush_metrics(rt.run(rt.webhooks.deliver([str(i) for i in ids])))
        return len(ids)

    @app.task(name=keys.TASK_ABORT)
    def abort(watch_id: str) -> None:
        abort_remote(runtime(app), watch_id)

    return app


def _until_redis_answers(call: Callable[[], T], patience: float = REDIS_PATIENCE) -> T:
    """Run ``call``, waiting out a Redis outage (a restart, a failover) for up to ``patience``.

    A registration exists nowhere but in its message until it is stored; Celery acknowledges a
    failed task's message (late acks included), so failing here would lose it. Everything else
    is already in Redis and protected by leases, so only registrations wait like this.
    """
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            log.warning("redis.unavailable", retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def store_for(settings: Settings, redis_url: str) -> Store:
    return Store.from_url(redis_url, history_limit=settings.history_limit)


signals.worker_process_shutdown.connect(_close_runtime)
