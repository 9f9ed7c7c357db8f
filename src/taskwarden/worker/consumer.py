"""The worker's message consumer: Celery's, except that what it cannot run is dead-lettered.

Celery drops a message it cannot decode (not JSON, a refused serializer such as pickle), one
that is no task message at all, or one naming a task no worker has, with a log line. Those are
registrations somebody meant to send (or probes), so, like a refused registration, each is
written to the dead-letter stream (`taskwarden deadletters`, source ``queue``) with the reason,
*before* Celery acknowledges or rejects it. The body is kept as text (bytes decoded with
replacement characters) and never deserialized: a pickle is never unpickled.

Installed with ``worker_consumer`` (:func:`taskwarden.worker.create_app`); it runs in the worker's
main process, which builds no :class:`~taskwarden.service.Runtime`, so it keeps a Store of its own.
"""

from __future__ import annotations

import time
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from taskwarden import logs
from taskwarden.store import Store, StoreError

log = logs.get("taskwarden.consumer")
MAX_BODY = 4096  # characters of an undecodable body kept for the dead letter


class Consumer(CeleryConsumer):  # type: ignore[misc]  # Celery is untyped
    """Celery's consumer, dead-lettering the messages it would drop."""

    _taskwarden_store: Store | None = None

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        kind = message.content_type or "no content type"
        self._dead_letter(message, f"undecodable message ({kind}): {type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "not a Celery task message (it names no task)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = _task_name(message)
        ours = ", ".join(sorted(n for n in self.app.tasks if n.startswith("taskwarden.")))
        self._dead_letter(message, f"unknown task {name!r}; this worker runs {ours}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = _task_name(message)
        kind = message.content_type or "no content type"
        self._dead_letter(
            message, f"invalid message for task {name!r} ({kind}): {type(exc).__name__}: {exc}"
        )
        super().on_invalid_task(body, message, exc)

    def _dead_letter(self, message: Any, reason: str) -> None:
        log.warning("message.dead_lettered", reason=reason)
        try:
            self._store().dead_letter(time.time(), "queue", reason, _describe(message))
        except StoreError as exc:  # the broker is this Redis: the message comes back
            log.error("message.dead_letter_failed", error=str(exc))

    def _store(self) -> Store:
        if self._taskwarden_store is None:
            settings = self.app.conf.taskwarden_settings
            self._taskwarden_store = Store.from_url(
                self.app.conf.taskwarden_redis_url, history_limit=settings.history_limit
            )
        return self._taskwarden_store


def _task_name(message: Any) -> str | None:
    headers = getattr(message, "headers", None) or {}
    name = headers.get("task") if isinstance(headers, dict) else None
    return str(name) if name is not None else None


def _describe(message: Any) -> dict[str, Any]:
    """What a dead letter keeps of a raw message: its envelope, and its body as text."""
    body = getattr(message, "body", b"")
    if isinstance(body, bytes | bytearray | memoryview):
        text = bytes(body).decode("utf-8", errors="replace")
    else:
        text = str(body)
    return {
        "task": _task_name(message),
        "content_type": getattr(message, "content_type", None),
        "content_encoding": getattr(message, "content_encoding", None),
        "body": text[:MAX_BODY],
    }
