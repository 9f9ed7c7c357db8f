"""The Celery tasks, by the names and on the queues of :mod:`taskwarden.keys`. Each is thin: it
takes ids, reads the clock once, and calls one service function with the parts of its process's
:class:`~taskwarden.service.Runtime` that function uses."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from celery import Celery

from taskwarden import keys, logs, metrics, service, webhooks
from taskwarden.config import Settings
from taskwarden.errors import InvalidRegistration
from taskwarden.service import Runtime, registration
from taskwarden.store import UNREACHABLE, Claim, StoreError

log = logs.get("taskwarden.tasks")
T = TypeVar("T")
REDIS_PATIENCE = 120.0  # seconds a registration waits for Redis to come back


def define_tasks(app: Celery, settings: Settings, runtime: Callable[[], Runtime]) -> None:
    """Register every taskwarden task on ``app``; ``runtime`` gives the process's runtime."""

    caps = {
        name: service.in_flight_cap(
            settings.dispatch_max_in_flight,
            settings.lease_seconds,
            settings.poll.check_deadline,
            limit.rate,
            limit.burst,
        )
        for name, limit in settings.rate_limits.items()
    }

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
        store = runtime().store
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

    @app.task(name=keys.TASK_TRACK_MANY)
    def track_many(*args: Any, **kwargs: Any) -> dict[str, Any]:
        store = runtime().store
        items = args[0] if len(args) == 1 and not kwargs else kwargs.get("registrations")
        if not isinstance(items, list) or (args and kwargs) or len(args) > 1:
            reason = "send the registrations as one list (args=[[{...}, ...]])"
            body = {"args": args, "kwargs": kwargs}
            log.warning("track_many.invalid", error=reason)
            _until_redis_answers(lambda: store.dead_letter(time.time(), "queue", reason, body))
            return {"error": reason}
        outcomes: list[service.Outcome] = []

        def register(chunk: list[Any]) -> list[service.Outcome]:
            return service.register_many(store, settings, chunk, source="queue")

        for start in range(0, len(items), registration.CHUNK):
            chunk = items[start : start + registration.CHUNK]
            outcomes += _until_redis_answers(partial(register, chunk))
        for i, outcome in enumerate(outcomes):
            if outcome.status == "refused":
                log.warning("track.invalid", index=i, error=outcome.error)
        counts = service.tally(outcomes)
        log.info("track_many.done", **counts)
        return {**counts, "results": [o.to_dict() for o in outcomes]}

    @app.task(name=keys.TASK_DISPATCH)
    def dispatch() -> dict[str, Any]:
        rt = runtime()
        now = time.time()
        rt.store.heartbeat("dispatch", now, ttl=max(30.0, 10 * settings.dispatch_interval))
        with app.connection_for_write() as conn:
            queued = conn.default_channel.client.llen(keys.QUEUE_POLL)
        result = service.dispatch(
            rt.store,
            send_polls,
            now=now,
            lease_seconds=settings.lease_seconds,
            batch_size=settings.dispatch_batch_size,
            max_claims=settings.dispatch_max_claims,
            queued_batches=int(queued),
            max_queued_batches=settings.max_queued_batches,
            max_in_flight=settings.dispatch_max_in_flight,
            in_flight_caps=caps,
            sweep_limit=settings.retention.sweep_limit,
            circuit=settings.circuit.policy(),
        )
        if result.removed:
            swept = metrics.Batch()
            swept.inc(metrics.WATCHES_REMOVED, by=result.removed)
            rt.store.add_metrics(swept)
        try:
            webhooks.pump(rt.store, settings, now, send_webhooks)
        except StoreError:  # the polls went out; the next tick picks the webhooks up
            log.exception("webhooks.pump_failed")
        return {
            "claimed": result.claimed,
            "batches": result.batches,
            "reaped": result.reaped,
            "at_cap": result.at_cap,
            "removed": result.removed,
        }

    @app.task(name=keys.TASK_POLL)
    def poll(provider: str, items: list[list[Any]]) -> dict[str, int]:
        rt = runtime()
        claims = [Claim(str(wid), int(fence)) for wid, fence in items]
        result = rt.run(
            service.poll_batch(
                rt.store,
                rt.providers[provider],
                claims,
                policies=rt.policies,
                now=time.time(),
                send_archive=send_archive,
                send_abort=send_abort,
                record=rt.record,
            )
        )
        return vars(result)

    @app.task(name=keys.TASK_ARCHIVE)
    def archive(watch_id: str, fence: int) -> str | None:
        rt = runtime()
        state = rt.run(
            service.archive_watch(
                rt.store,
                rt.providers,
                rt.archive,
                Claim(watch_id, int(fence)),
                policies=rt.policies,
                now=time.time(),
                record=rt.record,
            )
        )
        return None if state is None else str(state)

    @app.task(name=keys.TASK_WEBHOOK)
    def webhook(ids: list[str]) -> int:
        rt = runtime()
        rt.record(rt.run(rt.webhooks.deliver([str(i) for i in ids])))
        return len(ids)

    @app.task(name=keys.TASK_ABORT)
    def abort(watch_id: str) -> None:
        rt = runtime()
        rt.run(service.abort_remote(rt.store, rt.providers, watch_id, now=time.time()))


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
        except UNREACHABLE:
            if time.monotonic() > deadline:
                raise
            log.warning("redis.unavailable", retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
