"""What an isahit registration asks for (:class:`Watched`), and the documents' optional fields.

``params``: ``project_id`` (or the setting), ``kind`` (``task``, the default, or ``batch``),
``optional_fields`` (a list or a comma-separated string among the SDK's ``TaskOptionalFields``;
``data``, ``jobs``, ``metrics`` by default), and for a batch ``expected_tasks`` (the count that
ends it at once when all are final) and ``settle_seconds`` (how long it must stay unchanged and
all final otherwise; the setting ``batch_settle_seconds`` by default).

``lastAnnotator`` is not a server field: the SDK (``operations/task/get_tasks.py``) asks for
``jobs`` instead and its formatter (``lab_to_lab_formatter.py``) writes ``lastAnnotator`` = the
``state.completedBy.email`` of the latest ``complete`` job, dropping ``jobs`` unless they were
asked for. :func:`request_fields` and :func:`shaped` do the same to an archived document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from taskwarden.errors import RequestRejected
from taskwarden.providers.base import Target

NAME = "isahit"
OPTIONAL_FIELDS = ("data", "jobs", "metrics", "data.mask", "jobs.history", "lastAnnotator")
DEFAULT_FIELDS = ("data", "jobs", "metrics")
LAST_ANNOTATOR = "lastAnnotator"
PARAMS = ("kind", "project_id", "optional_fields", "expected_tasks", "settle_seconds")


@dataclass(frozen=True)
class Watched:
    """What a registration asks for: a task or a batch of a project, and what to archive."""

    kind: Literal["task", "batch"]
    remote_id: str
    project_id: str
    fields: tuple[str, ...]
    expected_tasks: int | None = None
    settle_seconds: float | None = None  # None: the provider setting


def watched(target: Target, default_project: str | None = None) -> Watched:
    """Read a target's params; a malformed registration is :class:`RequestRejected`."""
    params = dict(target.params)
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise _refused(f"isahit params {unknown} are unknown; use {', '.join(PARAMS)}")
    kind = params.get("kind", "task")
    if kind not in ("task", "batch"):
        raise _refused(f"isahit params.kind is 'task' or 'batch', not {kind!r}")
    project = params.get("project_id", default_project)
    if not isinstance(project, str) or not project.strip():
        raise _refused(
            "isahit registrations need params.project_id"
            " (or TASKWARDEN_PROVIDERS__ISAHIT__PROJECT_ID)"
        )
    fields = params.get("optional_fields", DEFAULT_FIELDS)
    if isinstance(fields, str):  # the CLI's --param optional_fields=data,jobs
        fields = [field.strip() for field in fields.split(",") if field.strip()]
    if not isinstance(fields, list | tuple) or not all(f in OPTIONAL_FIELDS for f in fields):
        raise _refused(
            "isahit params.optional_fields is a list (or a comma-separated string) among"
            f" {list(OPTIONAL_FIELDS)}"
        )
    expected = _number(params.get("expected_tasks"), integer=True)
    settle = _number(params.get("settle_seconds"), integer=False)
    for name, value, rule in (
        ("expected_tasks", expected, "a whole number >= 1"),
        ("settle_seconds", settle, "seconds >= 0"),
    ):
        if name in params and (value is None or kind != "batch"):
            raise _refused(f"isahit params.{name} is {rule}, for kind batch only")
    count = int(expected) if expected is not None else None
    return Watched(kind, target.remote_id, project, tuple(dict.fromkeys(fields)), count, settle)


def request_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """The ``optionalFields`` to send for ``fields``: ``lastAnnotator`` becomes ``jobs``."""
    sent = [f for f in fields if f != LAST_ANNOTATOR]
    if LAST_ANNOTATOR in fields and "jobs" not in sent:
        sent.append("jobs")
    return tuple(sent)


def shaped(doc: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """``doc`` as asked: with ``lastAnnotator`` derived as the SDK derives it, and without the
    ``jobs`` fetched only for that."""
    if LAST_ANNOTATOR not in fields:
        return doc
    jobs = doc.get("jobs")
    done = [
        job for job in (jobs if isinstance(jobs, list) else [])
        if isinstance(job, dict) and job.get("status") == "complete"
    ]  # fmt: skip
    done.sort(key=lambda job: _text(_get(job, "state", "completedAt")), reverse=True)
    shown = {key: value for key, value in doc.items() if key != "jobs" or "jobs" in fields}
    shown[LAST_ANNOTATOR] = _get(done[0], "state", "completedBy", "email") if done else None
    return shown


def _get(value: Any, *path: str) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any, *, integer: bool) -> float | None:
    # a number, or its text (the CLI's --param expected_tasks=40)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if integer and (value < 1 or value != int(value)):
        return None
    return float(value) if value >= 0 else None


def _refused(reason: str) -> RequestRejected:
    return RequestRejected(reason, provider=NAME)
