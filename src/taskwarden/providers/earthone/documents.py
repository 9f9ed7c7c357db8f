"""What EarthOne's documents say, in taskwarden's words: pure functions, no I/O.

A job (``GET /jobs/{id}``) carries one of the SDK's ``JobStatus`` words
(``earthdaily/earthone/core/compute/job.py:42-61``); ``JobStatus.terminal()`` is ``success``,
``failure``, ``timeout`` and ``canceled``, and the two cancellation steps ``cancel`` and
``canceling`` are not final. A function (``GET /functions/{id}?include=job.statistics``) is
finished as ``Function.wait_for_completion`` decides (``function.py:1453-1500``): ``ready`` or
``stopped`` with no job ``pending``, ``running``, ``cancel`` or ``canceling``;
``build_failed`` fails it (the SDK raises ``RuntimeError``).

A job log (``GET /jobs/{id}/log``) is NDJSON ``{"date": "...Z", "log": "..."}``; :class:`LogText`
renders it as ``Job.log()`` prints it (``compute_client.py:43-59``), in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from taskwarden.lifecycle import Observation, Remote

JOB_STATES = {
    "pending": Remote.PENDING,
    "running": Remote.RUNNING,
    "cancel": Remote.RUNNING,  # waiting to signal the engine (the SDK's README)
    "canceling": Remote.RUNNING,  # waiting for it to stop
    "success": Remote.SUCCEEDED,
    "failure": Remote.FAILED,
    "timeout": Remote.FAILED,  # the platform's own limit (the function's timeout)
    "canceled": Remote.CANCELLED,
}
TERMINAL = frozenset({"success", "failure", "timeout", "canceled"})  # JobStatus.terminal()
ACTIVE = ("pending", "running", "cancel", "canceling")  # what wait_for_completion counts
FUNCTION_BUILDING = frozenset({"awaiting_bundle", "building"})
FUNCTION_DONE = frozenset({"ready", "stopped"})
STATISTICS_KEYS = {
    "cpu": ("total", "time"),
    "memory": ("peak_bytes", "peak_percentage", "total_bytes"),
    "network": ("rx_bytes", "tx_bytes"),
}  # what details keep of a job's statistics: totals, never the timeseries


def job_observation(doc: Mapping[str, Any]) -> Observation:
    """What a job document says: its state, why it failed, its facts and its times."""
    word = _word(doc.get("status"))
    remote = JOB_STATES.get(word, Remote.UNKNOWN)
    message = None
    if word == "failure":
        message = "job failed: " + failure_words(doc)
    elif word == "timeout":
        message = (
            "the platform timed the job out (status timeout: its function's own time limit,"
            " not this watch's timeout): " + failure_words(doc)
        )
    elif word == "canceled":
        message = "job canceled on the platform"
    return Observation(
        remote,
        word,
        message=message,
        name=f"job {doc.get('id')} of function {doc.get('function_id')}",
        remote_created_at=parse_time(doc.get("creation_date")),
        remote_started_at=parse_time(doc.get("last_execution_date")),
        remote_ended_at=parse_time(doc.get("last_completion_date")) if word in TERMINAL else None,
        details=job_details(doc),
    )


def failure_words(doc: Mapping[str, Any]) -> str:
    """``error_reason``, ``exit_code``, ``execution_count``, ``runtime`` and peak memory."""
    reason = doc.get("error_reason")
    parts = [str(reason).strip() if reason else "no error_reason given"]
    for key, unit in (("exit_code", ""), ("execution_count", ""), ("runtime", " s")):
        value = _int(doc.get(key))
        if value is not None:
            parts.append(f"{key} {value}{unit}")
    peak = _int(_dig(doc, "statistics", "memory", "peak_bytes"))
    if peak:
        parts.append(f"peak memory {peak} bytes ({peak / 2**20:.1f} MiB)")
    return "; ".join(parts)


def job_details(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The small facts of a job worth keeping on its watch (no timeseries, no arguments)."""
    details: dict[str, Any] = {"function_id": doc.get("function_id")}
    reason = doc.get("error_reason")
    if isinstance(reason, str) and reason:
        details["error_reason"] = reason[:500]
    for key in ("exit_code", "execution_count", "runtime"):
        if (value := _int(doc.get(key))) is not None:
            details[key] = value
    kept: dict[str, dict[str, Any]] = {}
    for group, keys in STATISTICS_KEYS.items():
        for key in keys:
            value = _dig(doc, "statistics", group, key)
            if _number(value):
                kept.setdefault(group, {})[key] = value
    if kept:
        details["statistics"] = kept
    return details


def function_observation(doc: Mapping[str, Any], total: int | None = None) -> Observation:
    """What a function document with ``job_statistics`` says; ``total`` (from a count of its
    jobs) when the statistics name no terminal word, so that progress can still be told."""
    word = _word(doc.get("status"))
    counts = statistics(doc.get("job_statistics"))
    active = sum(counts.get(w, 0) for w in ACTIVE)
    if total is None:
        total = sum(counts.values())
    ended = max(0, total - active)
    title = doc.get("name") or doc.get("id")
    seen = Observation(
        Remote.UNKNOWN,
        word,
        name=f"function {title}",
        remote_created_at=parse_time(doc.get("creation_date")),
        details={"function_status": word, "jobs": total, "job_statistics": counts},
    )
    if word == "build_failed":
        said = f"function {title} failed to build (status build_failed); its build log says why"
        return replace(seen, remote=Remote.FAILED, message=said)
    if word in FUNCTION_BUILDING:
        return replace(seen, remote=Remote.PENDING)
    if word not in FUNCTION_DONE:
        return seen
    if active:
        return replace(seen, remote=Remote.RUNNING, progress=ended / total if total else None)
    ends = ", ".join(f"{n} {w}" for w, n in sorted(counts.items()) if n and w in TERMINAL)
    said = f"all {total} jobs ended" + (f": {ends}" if ends else "")
    return replace(seen, remote=Remote.SUCCEEDED, progress=1.0, message=said)


def statistics(value: Any) -> dict[str, int]:
    """``job_statistics`` as counts by status word (malformed entries dropped)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): n for k, v in value.items() if (n := _int(v)) is not None and n >= 0}


def needs_count(doc: Mapping[str, Any]) -> bool:
    """Whether the statistics leave the number of jobs unknown: jobs are still active and no
    terminal word is counted (the platform may count only what ``wait_for_completion`` reads)."""
    counts = statistics(doc.get("job_statistics"))
    active = any(counts.get(w) for w in ACTIVE)
    return active and not any(w in counts for w in TERMINAL)


def parse_time(value: Any) -> float | None:
    """Unix seconds of an EarthOne date: an ISO string (``Z`` or an offset; naive is UTC) or a
    unix number, as the SDK's ``DatetimeAttribute`` reads them; None when it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class LogText:
    """NDJSON log bytes in, ``Job.log()``'s text out: ``<date> <log>`` lines joined by
    newlines, dates in UTC (the SDK shows the user's time zone; a service has none). A line
    that is not such an object is kept as it came (the SDK would raise on it)."""

    def __init__(self) -> None:
        self._pending = b""
        self._lines = 0

    def feed(self, chunk: bytes) -> bytes:
        """The text of the complete lines ``chunk`` finishes."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        return b"".join(self._render(lines))

    def close(self) -> bytes:
        """The text of a last line without a newline."""
        rest, self._pending = self._pending, b""
        return b"".join(self._render([rest]))

    def _render(self, lines: list[bytes]) -> Iterator[bytes]:
        for line in lines:
            if not line.strip():
                continue  # iter_lines() yields nothing for the trailing newline
            text = render_line(line)
            yield (b"\n" if self._lines else b"") + text.encode()
            self._lines += 1


def render_line(line: bytes) -> str:
    """One NDJSON log line as ``Job.log(timestamps=True)`` prints it."""
    try:
        row = json.loads(line)
        date, text = row["date"], row["log"]
        when = datetime.fromisoformat(date[:-1] + "+00:00").astimezone(UTC)
    except (ValueError, TypeError, KeyError):
        return line.decode("utf-8", errors="replace").rstrip("\r")
    return f"{when} {text}"


def _word(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _dig(doc: Mapping[str, Any], *keys: str) -> Any:
    value: Any = doc
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)
