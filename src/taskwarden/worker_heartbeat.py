"""Each Celery worker node says it is alive: its main process writes
``heartbeat:worker:<node name>`` every ``INTERVAL`` seconds with a TTL, so ``/readyz`` and
``/v1/stats`` see which workers run without asking the broker (Celery's own heartbeats need
events, which taskwarden leaves off)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import redis
from celery import signals

from taskwarden.store import Store

INTERVAL = 5.0
TTL = 30.0


def install(redis_url: str) -> None:
    """Beat for the worker node this process runs, from when it is ready until it stops."""
    stop = threading.Event()

    def beat(node: str) -> None:
        store = Store.from_url(redis_url)
        try:
            while not stop.is_set():
                with contextlib.suppress(redis.RedisError):  # Redis away: the next beat retries
                    store.worker_heartbeat(node, time.time(), TTL)
                stop.wait(INTERVAL)
            with contextlib.suppress(redis.RedisError):  # else the TTL clears it
                store.redis.delete(store.worker_key(node))
        finally:
            store.redis.close()

    def ready(sender: Any = None, **_: Any) -> None:
        node = str(getattr(sender, "hostname", None) or "worker")
        threading.Thread(target=beat, args=(node,), name="taskwarden-heartbeat",
                         daemon=True).start()  # fmt: skip

    def shutdown(**_: Any) -> None:
        stop.set()

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
