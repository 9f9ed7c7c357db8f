"""The worker's message consumer: Celery's, except that what it cannot run is dead-lettered.

Celery drops a message it cannot decode (not JSON, a refused serializer such as pickle), one
that is no task message at all, or one naming a task no worker has, with a log line. Those are
registrations somebody meant to send (or probes), so, like a refused registration, each is
written to the dead-letter stream (`taskwarden deadletters`, source ``queue``) with the reason,
*before* Celery acknowledges or rejects it. The body is kept as text (bytes decoded with
replacement characters) and never deserialized: a pickle is never unpickled.

Some shapes Celery does not guard against at all: a ``task`` header that is no string (a list
makes its strategy lookup raise ``TypeError``), a task message without a string ``id``, and a
JSON body that is not the ``[args, kwargs, embed]`` triple make its ``Request`` raise in the
event loop, which stops the worker ("Unrecoverable error"). Those are checked before Celery sees
the message (:func:`shape_problem`) and dead-lettered likewise; anything else that escapes
Celery's handling of one message dead-letters that message instead of stopping the worker.

Installed with ``worker_consumer`` (:func:`taskwarden.worker.create_app`); it runs in the worker's
main process, which builds no :class:`~taskwarden.service.Runtime`, so it keeps a Store of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer as CeleryConsumer

from taskwarden import logs
from taskwarden.store import Store, StoreError

log = logs.get("taskwarden.consumer")
MAX_BODY = 4096  # characters of an undecodable body kept for the dead letter
MAX_REPR = 120  # characters of a foreign value quoted in a reason
_stdlib_log = logging.getLogger(__name__)  # what kombu's reject_log_error logs through


class Consumer(CeleryConsumer):  # type: ignore[misc]  # Celery is untyped
    """Celery's consumer, dead-lettering the messages it would drop."""

    _taskwarden_store: Store | None = None

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Celery's handler of one task message, behind :func:`shape_problem` and a guard that
        dead-letters, rather than lets through, what Celery would stop the worker on."""
        handle: Callable[[Any], Any] = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            problem = shape_problem(message, self.strategies)
            if problem is not None:
                return self._refuse(message, problem)
            try:
                return handle(message)
            except self.connection_errors:
                raise  # the broker connection is lost: Celery reconnects
            except Exception as exc:
                if getattr(message, "acknowledged", True):
                    raise  # already settled: not ours to dead-letter
                log.error("message.unhandled", error=_short(exc))
                return self._refuse(message, f"a message this worker could not take: {_short(exc)}")

        return on_task_received

    def _refuse(self, message: Any, reason: str) -> None:
        self._dead_letter(message, reason)
        message.reject_log_error(_stdlib_log, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=None)

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
                self.app.conf.taskwarden_redis_url, **settings.store_options()
            )
        return self._taskwarden_store


def shape_problem(message: Any, tasks: Any) -> str | None:
    """Why Celery's ``Request`` could not be built from ``message`` (a task message naming one
    of ``tasks``), or None. Only the shapes Celery leaves unguarded are checked; what it handles
    itself (no ``task`` header, an unknown task, an undecodable body) passes."""
    headers = getattr(message, "headers", None)
    if not isinstance(headers, dict):
        return None  # Celery: "not a task message"
    if "task" not in headers:  # protocol 1: the task name is in the body
        body = _decoded(message)
        name = body.get("task") if isinstance(body, dict) else None
        if name is not None and not isinstance(name, str):
            return f"the body's task is a {type(name).__name__}, not a task name: {_quote(name)}"
        return None
    name = headers["task"]
    if not isinstance(name, str):
        return f"the task header is a {type(name).__name__}, not a task name: {_quote(name)}"
    if name not in tasks:
        return None  # Celery: "unknown task"
    if not isinstance(headers.get("id"), str):
        return f"task message for {name!r} without a string id header"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in limits
        )
    ):
        return (
            f"task message for {name!r} with a timelimit header of {_quote(limits)}: Celery "
            "wants [soft, hard], each a number or null"
        )
    body = _decoded(message)
    if body is None or (isinstance(body, dict) and "args" in body):
        return None  # undecodable (Celery dead-letters it), or protocol 1/2 hybrid (it checks)
    if not (isinstance(body, list | tuple) and len(body) == 3):
        kind = f"a {len(body)}-item list" if isinstance(body, list) else f"a {_json_kind(body)}"
        return (
            f"the body of a task message for {name!r} is {kind}, not Celery's [args, kwargs, embed]"
        )
    args, kwargs, embed = body
    wrong = [
        f"{part} a {_json_kind(value)}"
        for part, value, ok in [
            ("args are", args, isinstance(args, list | tuple)),
            ("kwargs are", kwargs, isinstance(kwargs, dict)),
            ("embed is", embed, embed is None or isinstance(embed, dict)),
        ]
        if not ok
    ]
    if wrong:
        return (
            f"in the body of a task message for {name!r}, the {', the '.join(wrong)}: Celery "
            "wants [list, object, object]"
        )
    return None


def _decoded(message: Any) -> Any:
    """The message's body decoded (kombu caches it; Celery decodes it in this process too), or
    None when it cannot be (Celery's own handling says why)."""
    try:
        return message.decode()
    except Exception:  # undecodable or refused: Celery dead-letters it
        return None


def _json_kind(value: Any) -> str:
    kinds = {dict: "JSON object", list: "JSON list", str: "JSON string", bool: "JSON boolean",
             int: "JSON number", float: "JSON number", type(None): "JSON null"}  # fmt: skip
    return kinds.get(type(value), type(value).__name__)


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _short(exc: Exception) -> str:
    text = str(exc)
    text = text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."
    return f"{type(exc).__name__}: {text}"


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
