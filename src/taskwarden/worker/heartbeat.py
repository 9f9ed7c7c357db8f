"""Each Celery worker node says it is alive, and which queues it consumes: its main process
writes ``heartbeat:worker:<node name>`` and ``heartbeat:queues:<node name>`` every ``INTERVAL``
seconds with a TTL, so ``/readyz`` and ``/v1/stats`` see which workers run, and whether every
queue has one, without asking the broker (Celery's own heartbeats need events, which
taskwarden leaves off)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from celery import signals

from taskwarden import logs
from taskwarden.store import Store, StoreError

log = logs.get("taskwarden.worker_heartbeat")

INTERVAL = 5.0
TTL = 30.0
STOP_WAIT = 2.0  # seconds a stopping worker waits for its heartbeat to be deleted


def consumed_queues(consumer: Any) -> list[str]:
    """The queues a worker's consumer takes tasks from, as ``celery inspect active_queues``
    reports them: its task consumer's, which follow ``-Q`` and any ``add_consumer`` or
    ``cancel_consumer`` since. Between a lost broker connection and the next, when there is
    no task consumer, the queues it will consume again."""
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        return sorted({str(queue.name) for queue in list(task_consumer.queues)})
    return sorted(list(consumer.app.amqp.queues.consume_from))


def install(redis_url: str) -> None:
    """Beat for the worker node this process runs, from when it is ready until it stops."""
    stop = threading.Event()

    def beat(node: str, consumer: Any) -> None:
        store = Store.from_url(redis_url)
        queues: list[str] | None = None
        try:
            while not stop.is_set():
                try:
                    queues = None if consumer is None else consumed_queues(consumer)
                except Exception:  # Celery's internals moved: still say alive, with the last seen
                    log.exception("worker.queues_unknown", node=node)
                with contextlib.suppress(StoreError):  # Redis away: the next beat retries
                    store.worker_heartbeat(node, time.time(), TTL, queues)
                stop.wait(INTERVAL)
            with contextlib.suppress(StoreError):  # else the TTL clears it
                store.forget_worker(node)
        finally:
            store.close()

    beating: list[threading.Thread] = []

    def ready(sender: Any = None, **_: Any) -> None:
        node = str(getattr(sender, "hostname", None) or "worker")
        thread = threading.Thread(target=beat, args=(node, sender), name="taskwarden-heartbeat",
                                  daemon=True)  # fmt: skip
        beating.append(thread)
        thread.start()

    def shutdown(**_: Any) -> None:
        stop.set()
        for thread in beating:  # the process exits next: let the heartbeat be taken back first
            thread.join(STOP_WAIT)

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
