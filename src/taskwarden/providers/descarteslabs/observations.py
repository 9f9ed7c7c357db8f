"""What Descartes Labs' documents say, as Observations: pure functions, no I/O.

A copy or delete job's status (``{"data": {"attributes": {state, created, started, ended,
errors}}}``) is judged as the SDK's ``AsyncJob._check_complete`` (1.12.1
``vectors/async_job.py``) judges it: ``errors`` count only once the state is final, so a
``RUNNING`` job that lists errors is still running; at ``DONE`` or ``SUCCESS`` they fail it.
An export's result (``status``, ``exception_name``, ``failure_type``, ``runtime``,
``peak_memory_usage``, ``labels``, ``created``) exists only once the export has ended.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from taskwarden import net
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.timestamps import epoch_seconds

JOB_STATES = {
    "PENDING": Remote.PENDING,
    "RUNNING": Remote.RUNNING,
    "DONE": Remote.SUCCEEDED,
    "SUCCESS": Remote.SUCCEEDED,
    "FAILED": Remote.FAILED,  # the documented word, which the SDK never recognises
    "FAILURE": Remote.FAILED,  # the word the SDK checks
}
EXPORT_STATES = {"SUCCESS": Remote.SUCCEEDED, "FAILURE": Remote.FAILED}
FINAL = (Remote.SUCCEEDED, Remote.FAILED)
EXPORT_FACTS = ("exception_name", "failure_type", "runtime", "peak_memory_usage")
MAX_DETAIL = 200  # characters of an error kept in an observation's details


def job_observation(
    kind: str, product_id: str, title: str, attributes: Mapping[str, Any]
) -> Observation:
    """What a copy or delete job's status attributes say; ``errors`` fail it once it is final."""
    raw = attributes.get("state")
    word = raw if isinstance(raw, str) else json.dumps(raw)
    remote = JOB_STATES.get(word, Remote.UNKNOWN)
    errors = attributes.get("errors")
    message = None
    if errors and remote in FINAL:
        said = net.error_message({"errors": errors}) or json.dumps(errors)
        count = len(errors) if isinstance(errors, list) else 1
        remote = Remote.FAILED
        message = f"{kind} job reported {count} error{'s' if count != 1 else ''}: {said}"
    elif remote is Remote.FAILED:
        message = f"{kind} job for product {product_id} ended {word}, no errors listed"
    details: dict[str, Any] | None = None
    if errors:
        first = errors[0] if isinstance(errors, list) else errors
        text = first if isinstance(first, str) else json.dumps(first)
        count = len(errors) if isinstance(errors, list) else 1
        details = {"errors": count, "first_error": text[:MAX_DETAIL]}
    return Observation(
        remote,
        word,
        message=message,
        name=title,
        remote_created_at=epoch_seconds(attributes.get("created")),
        remote_started_at=epoch_seconds(attributes.get("started")),
        remote_ended_at=epoch_seconds(attributes.get("ended")),
        details=details,
    )


def export_observation(title: str, attributes: Mapping[str, Any]) -> Observation:
    """What a finished export's result says; a failure names exception, type, time, memory."""
    raw = attributes.get("status")
    word = raw if isinstance(raw, str) else json.dumps(raw)
    remote = EXPORT_STATES.get(word, Remote.UNKNOWN)
    message = export_failure(attributes) if remote is Remote.FAILED else None
    return Observation(
        remote,
        word,
        message=message,
        name=title,
        remote_created_at=epoch_seconds(attributes.get("created")),
        details=export_details(attributes),
    )


def export_details(attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The result's ``exception_name``, ``failure_type``, ``runtime`` (CPU s) and
    ``peak_memory_usage`` (bytes), those it gives (``"None"`` is none)."""
    facts: dict[str, Any] = {}
    for key in ("exception_name", "failure_type"):
        if (given := _given(attributes.get(key))) is not None:
            facts[key] = given[:MAX_DETAIL]
    for key in ("runtime", "peak_memory_usage"):
        if (number := _number(attributes.get(key))) is not None:
            facts[key] = number
    return facts or None


def export_failure(attributes: Mapping[str, Any]) -> str:
    """``exception_name``, ``failure_type``, ``runtime`` and ``peak_memory_usage``, in words."""
    exception = _given(attributes.get("exception_name"))
    kind = _given(attributes.get("failure_type"))
    parts = [f"exception {exception}" if exception else "no exception named"]
    if kind:
        why = {"executable_failure": "resource limits reached", "exception": "it raised"}
        parts[0] += f" (failure_type {kind}" + (f": {why[kind]})" if kind in why else ")")
    runtime = _number(attributes.get("runtime"))
    if runtime is not None:
        parts.append(f"runtime {runtime:g} s")
    memory = _number(attributes.get("peak_memory_usage"))
    if memory is not None:
        parts.append(f"peak_memory_usage {int(memory)} bytes ({memory / 2**20:.1f} MiB)")
    return "export failed: " + "; ".join(parts)


def storage_key(attributes: Mapping[str, Any]) -> str | None:
    """The storage key of an export's data: ``labels[3]``, as the SDK's ExportTask reads it."""
    labels = attributes.get("labels")
    if isinstance(labels, list) and len(labels) > 3 and isinstance(labels[3], str) and labels[3]:
        return labels[3]
    return None


def stacktrace(attributes: Mapping[str, Any]) -> str | None:
    """The result's ``stacktrace`` (the SDK's ``ExportTask.stacktrace``), when it has one."""
    return _given(attributes.get("stacktrace"))


def _given(value: Any) -> str | None:
    # the service documents "None" (the string) for "no exception"
    if not isinstance(value, str) or value.strip() in ("", "None", "null"):
        return None
    return value.strip()


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value
