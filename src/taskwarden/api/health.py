"""Readiness: is everything a watch needs to make progress reachable and alive? Each check
answers with a reason, and all run at once, each within ``CHECK_TIMEOUT``."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from celery import Celery

from taskwarden import archive, keys
from taskwarden.config import Settings
from taskwarden.errors import ConfigError
from taskwarden.store import Store

CHECK_TIMEOUT = 5.0  # seconds a check may take before it counts as failed


class Readiness:
    """The checks behind ``/readyz``, sharing one thread pool (a hung check cannot pile up)."""

    def __init__(self, settings: Settings, store: Store, producer: Celery) -> None:
        self.settings = settings
        self.store = store
        self.producer = producer
        self._archive: archive.ArchiveStore | None = None
        self._pool = ThreadPoolExecutor(max_workers=7, thread_name_prefix="readyz")

    def run(self) -> dict[str, tuple[bool, str]]:
        checks: dict[str, Callable[[], tuple[bool, str]]] = {
            "redis": self.redis,
            "broker": self.broker,
            "archive": self.archive,
            "beat": self.beat,
            "workers": self.workers,
            "queues": self.queues,
            "dispatch_lag": self.dispatch_lag,
        }
        futures = {name: self._pool.submit(check) for name, check in checks.items()}
        deadline = time.monotonic() + CHECK_TIMEOUT
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                results[name] = (False, f"no answer within {CHECK_TIMEOUT:g} s")
            except Exception as exc:  # a failed check says why, whatever went wrong
                results[name] = (False, f"{type(exc).__name__}: {exc}")
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def redis(self) -> tuple[bool, str]:
        started = time.monotonic()
        self.store.ping()
        return True, f"ping answered in {(time.monotonic() - started) * 1000:.1f} ms"

    def broker(self) -> tuple[bool, str]:
        with self.producer.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=CHECK_TIMEOUT)
            waiting = conn.default_channel.client.llen(keys.QUEUE_POLL)
        return True, f"{waiting} poll batches waiting"

    def archive(self) -> tuple[bool, str]:
        url = self.settings.resolved_archive_url
        if self._archive is None:
            try:
                self._archive = archive.open_store(self.settings)
            except ConfigError as exc:
                return False, str(exc)
        archive.probe(self._archive)
        return True, f"listed {url}"

    def beat(self) -> tuple[bool, str]:
        last = self.store.last_heartbeat("dispatch")
        if last is None:
            return False, (
                "no dispatch heartbeat: beat is not running, or no worker consumes the "
                f"{keys.QUEUE_DISPATCH} queue"
            )
        return True, f"last dispatch {max(0.0, time.time() - last):.1f} s ago"

    def workers(self) -> tuple[bool, str]:
        beats = self.store.worker_heartbeats()
        if not beats:
            return False, "no worker heartbeat: no worker is running"
        now = time.time()
        return True, ", ".join(f"{n} ({max(0.0, now - t):.1f} s ago)" for n, t in beats.items())

    def queues(self) -> tuple[bool, str]:
        """Every queue is consumed by a live worker (by the queues their heartbeats report)."""
        consumed = self.store.worker_queues()
        consumers = {
            queue: sorted(n for n, qs in consumed.items() if qs is not None and queue in qs)
            for queue in keys.ALL_QUEUES
        }
        idle = [queue for queue, nodes in consumers.items() if not nodes]
        if not idle:
            return True, ", ".join(f"{q} ({', '.join(n)})" for q, n in consumers.items())
        silent = sorted(n for n, qs in consumed.items() if qs is None)
        if silent:
            # an older worker does not say what it consumes: it may well consume these
            return True, (
                f"no reported consumer of {', '.join(idle)}; workers that do not report their "
                f"queues (a taskwarden older than this one) may consume them: {', '.join(silent)}"
            )
        return False, (
            f"no worker consumes {', '.join(idle)}: nothing is taken from "
            f"{'it' if len(idle) == 1 else 'them'}; start one with "
            f"`taskwarden worker -Q {','.join(idle)}`"
        )

    def dispatch_lag(self) -> tuple[bool, str]:
        lag = self.store.dispatch_lag(time.time())
        limit = self.settings.api.ready_max_lag
        if lag > limit:
            return False, f"a watch waited {lag:.1f} s for its check (more than {limit:g} s)"
        return True, f"{lag:.1f} s (at most {limit:g} s)"
