"""Scripted EarthOne compute jobs and functions: their specs, documents, logs and results.

A job (:class:`EOJob`) shows the SDK's ``JobStatus`` words only (``pending``, ``running``,
``cancel``, ``canceling``, ``success``, ``failure``, ``timeout``, ``canceled``; any other word
makes ``Job.get`` raise). A cancelled pending job is ``canceled`` at once; a running one goes
``cancel``, then ``canceling``, then ``canceled`` over ``cancel_seconds``, unless its script
ends first (the platform's README says a running job may still finish). A function
(:class:`EOFunction`) builds for ``build_seconds``, then is ``ready`` (or ``build_failed``);
the clocks of the jobs it was scripted with start when it is ready.

Results and logs are functions of the script, so tests know their bytes: a result is the
seeded bytes of :mod:`.script` (or a JSON value), a log is NDJSON lines
``{"date": "...Z", "log": "..."}``, with a Python traceback when the job failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import md5, sha256
from typing import Annotated, Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from taskwarden.simulator.script import Script, ScriptedTask, output_bytes

TERMINAL = ("success", "failure", "timeout", "canceled")  # JobStatus.terminal()
ACTIVE = ("pending", "running", "cancel", "canceling")  # what Function.wait_for_completion counts
JOB_WORDS = ACTIVE + TERMINAL
MiB = 1024 * 1024


class EOJobSpec(Script):
    """A job's script (timing, ``outcome`` and the result bytes' ``file_size`` from
    :class:`Script`): ``outcome`` ``failure`` ends ``failure_status`` with ``error_reason`` and
    ``exit_code``; ``aborted`` is a job the platform cancels; ``result`` says what a success
    stores (seeded bytes, ``result_json``, or nothing)."""

    kind: Literal["job"] = "job"
    job_id: str = Field(default_factory=lambda: uuid4().hex)
    function_id: str | None = None  # None: a function of its own
    failure_status: Literal["failure", "timeout"] = "failure"
    error_reason: str = "ValueError: simulated failure"
    exit_code: int = 1
    execution_count: int = Field(1, ge=1)
    result: Literal["bytes", "json", "none"] = "bytes"
    result_json: Any = None  # the value a "json" result stores (JSON-encoded, as the runner does)
    log_lines: list[str] | None = None  # None: a log written from the script
    cancel_seconds: float = Field(1.0, ge=0)  # how long cancel + canceling last
    peak_memory_bytes: int = Field(96 * MiB, ge=0)
    cpu_seconds: float = Field(1.5, ge=0)

    @field_validator("job_id", "function_id")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return value if value is None else path_safe(value)


class EOFunctionSpec(BaseModel):
    """A function and the ``jobs`` it runs: each plays ``job`` (fields of :class:`EOJobSpec`),
    job ``i`` staying pending ``i * stagger`` seconds longer; the last ``failures`` of them
    fail. ``outcome`` ``build_failed`` never runs any."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["function"] = "function"
    function_id: str = Field(default_factory=lambda: uuid4().hex)
    name: str = "sim-function"
    namespace: str | None = None  # None: "<org>:<userid>" of the simulator's user
    build_seconds: float = Field(0.0, ge=0)
    outcome: Literal["ready", "build_failed"] = "ready"
    jobs: int = Field(0, ge=0, le=100_000)
    job: dict[str, Any] = Field(default_factory=dict)
    stagger: float = Field(0.0, ge=0)
    failures: int = Field(0, ge=0)
    timeout: int = Field(3600, ge=1)
    retry_count: int = Field(0, ge=0)

    @field_validator("function_id")
    @classmethod
    def _id(cls, value: str) -> str:
        return path_safe(value)

    @model_validator(mode="after")
    def _consistent(self) -> EOFunctionSpec:
        if self.outcome == "build_failed" and self.jobs:
            raise ValueError("a function that fails to build runs no jobs")
        if self.failures > self.jobs:
            raise ValueError("failures cannot exceed jobs")
        if {"kind", "job_id", "function_id"} & set(self.job):
            raise ValueError("job is a template: no kind, job_id or function_id")
        return self


AnySpec = Annotated[EOJobSpec | EOFunctionSpec, Field(discriminator="kind")]
SPECS = TypeAdapter(list[AnySpec])


@dataclass(slots=True)
class EOFunction:
    """A function as it plays: built ``build_seconds`` after ``created``."""

    spec: EOFunctionSpec
    namespace: str
    created: float
    epoch: float
    jobs: list[str]  # its job ids, in creation order

    @property
    def function_id(self) -> str:
        return self.spec.function_id

    @property
    def ready_at(self) -> float:
        return self.created + self.spec.build_seconds

    @property
    def registration(self) -> dict[str, Any]:
        """What to send ``taskwarden.track`` to watch this whole function."""
        return {"provider": "earthone", "remote_id": f"function:{self.function_id}", "params": {}}

    def status(self, now: float) -> str:
        if now < self.ready_at:
            return "building"
        return "build_failed" if self.spec.outcome == "build_failed" else "ready"

    def document(self, now: float, statistics: dict[str, int] | None) -> dict[str, Any]:
        """``GET /functions/{id}`` (``job_statistics`` with ``include=job.statistics``)."""
        spec = self.spec
        doc: dict[str, Any] = {
            "id": spec.function_id,
            "name": spec.name,
            "image": "python3.11:latest",
            "cpus": 1,
            "memory": 2048,
            "maximum_concurrency": 100,
            "namespace": self.namespace,
            "owner": f"user:{self.namespace.rpartition(':')[2]}",
            "status": self.status(now),
            "timeout": spec.timeout,
            "retry_count": spec.retry_count,
            "enabled": True,
            "auto_start": True,
            "environment": {},
            "creation_date": iso(self.epoch),
            "modified_date": iso(self.epoch + min(now, self.ready_at) - self.created),
        }
        if statistics is not None:
            doc["job_statistics"] = statistics
        return doc

    def build_log(self) -> bytes:
        """The build log (``GET /functions/{id}/log`` serves it gzipped)."""
        lines = [f"building {self.spec.name} on python3.11:latest", "installing requirements"]
        if self.spec.outcome == "build_failed":
            lines += ["ERROR: No matching distribution found for numpy==0.0.1", "build failed"]
        else:
            lines.append("build succeeded")
        return ("\n".join(lines) + "\n").encode()


@dataclass(slots=True)
class EOJob(ScriptedTask[EOJobSpec]):
    """A job as it plays: its script's timeline, overlaid by a cancellation ``cancel_at``
    seconds after ``created`` (simulation time) when one was asked for."""

    function_id: str = ""
    index: int = 0  # its place among its function's jobs (its args)
    cancel_at: float | None = None

    @property
    def job_id(self) -> str:
        return self.script.job_id

    @property
    def registration(self) -> dict[str, Any]:
        """What to send ``taskwarden.track`` to watch this job."""
        return {"provider": "earthone", "remote_id": f"job:{self.job_id}", "params": {}}

    @property
    def natural_end(self) -> float | None:
        """Seconds after ``created`` at which the script ends; None: never."""
        if self.script.outcome == "never":
            return None
        return self.script.pending_seconds + self.script.running_seconds

    def status(self, now: float) -> str:
        """The ``JobStatus`` word at simulation time ``now``."""
        return self.timeline(now)[0]

    def timeline(self, now: float) -> tuple[str, float | None, float | None]:
        """(status word, started, ended): the times in seconds after ``created``."""
        script, elapsed = self.script, now - self.created
        pending, end = script.pending_seconds, self.natural_end
        cancel = self.cancel_at
        if cancel is not None and cancel < pending:  # a pending job is canceled at once
            return ("canceled", None, cancel) if elapsed >= cancel else ("pending", None, None)
        done = None if cancel is None else cancel + script.cancel_seconds
        if end is not None and elapsed >= end and (done is None or end <= done):
            return self._ending(), pending, end
        if done is not None and cancel is not None and elapsed >= cancel:
            if elapsed >= done:
                return "canceled", pending, done
            word = "cancel" if elapsed < cancel + script.cancel_seconds / 2 else "canceling"
            return word, pending, None
        return ("pending", None, None) if elapsed < pending else ("running", pending, None)

    def _ending(self) -> str:
        outcome = self.script.outcome
        if outcome == "failure":
            return self.script.failure_status
        return "canceled" if outcome == "aborted" else "success"

    def cancel(self, now: float) -> bool:
        """Ask for cancellation; False (nothing changes) when it ended or was asked before."""
        if self.cancel_at is not None or self.status(now) in TERMINAL:
            return False
        self.cancel_at = now - self.created
        return True

    def ran(self, now: float) -> bool:
        """Whether it has started running (so it has a log)."""
        return self.timeline(now)[1] is not None

    def has_result(self, now: float) -> bool:
        return self.status(now) == "success" and self.script.result != "none"

    def result(self) -> bytes:
        """The stored result blob, as the job runner wrote it."""
        script = self.script
        if script.result == "json":
            return json.dumps(script.result_json).encode()
        return output_bytes(self.seed, script.file_size)

    @property
    def result_sha256(self) -> str:
        return sha256(self.result()).hexdigest()

    @property
    def result_md5(self) -> str:
        return md5(self.result(), usedforsecurity=False).hexdigest()

    def document(self, now: float, timings: bool = False) -> dict[str, Any]:
        """``GET /jobs/{id}``: the fields of the SDK's ``Job`` (``job.py:87-186``)."""
        script = self.script
        word, started, ended = self.timeline(now)
        failed = word in ("failure", "timeout")
        ran_for = None if started is None or ended is None else max(0.0, ended - started)
        doc: dict[str, Any] = {
            "id": script.job_id,
            "function_id": self.function_id,
            "creation_date": iso(self.epoch),
            "args": [self.index],
            "kwargs": {},
            "environment": {},
            "tags": [],
            "status": word,
            "error_reason": (self._timeout_reason() if word == "timeout" else script.error_reason)
            if failed
            else None,
            "exit_code": (script.exit_code if failed else 0) if word in TERMINAL[:3] else None,
            "execution_count": script.execution_count if started is not None else 0,
            "runtime": None if ran_for is None else round(ran_for),
            "last_execution_date": None if started is None else iso(self.epoch + started),
            "last_completion_date": None if ended is None else iso(self.epoch + ended),
            "statistics": None if started is None else self._statistics(),
        }
        if timings:
            doc |= {"provisioning_time": 2, "pull_time": 1}
        return doc

    def _timeout_reason(self) -> str:
        return f"Job {self.job_id} exceeded the function's timeout"

    def _statistics(self) -> dict[str, Any]:
        script = self.script
        cpu_ns = int(script.cpu_seconds * 1e9)
        peak = script.peak_memory_bytes
        return {
            "cpu": {"total": 87.5, "time": cpu_ns, "timeseries": [[87.5, cpu_ns]]},
            "memory": {
                "total_bytes": 2048 * MiB,
                "total_percentage": round(100 * peak / (2048 * MiB), 2),
                "peak_bytes": peak,
                "peak_percentage": round(100 * peak / (2048 * MiB), 2),
                "timeseries": [[round(100 * peak / (2048 * MiB), 2), peak]],
            },
            "network": {"rx_bytes": 4096, "tx_bytes": 1024, "rx_dropped": 0, "tx_dropped": 0,
                        "rx_errors": 0, "tx_errors": 0},
        }  # fmt: skip

    def log_lines(self, now: float) -> list[tuple[float, str]]:
        """(wall-clock time, text) of each log line written by ``now``."""
        script = self.script
        word, started, ended = self.timeline(now)
        if started is None:
            return []
        start = self.epoch + started
        if script.log_lines is not None:
            texts = list(script.log_lines)
        else:
            texts = [f"job {self.job_id} started (attempt {script.execution_count})",
                     f"calling main({self.index})"]  # fmt: skip
            if word == "failure":
                reason = script.error_reason
                texts += ["Traceback (most recent call last):",
                          '  File "/app/main.py", line 12, in main',
                          "    raise " + (reason.split(":", 1)[0] or "Exception") + "(...)",
                          reason]  # fmt: skip
            elif word == "timeout":
                texts.append("killed: the job ran past its function's timeout")
            elif word == "success":
                stored = "no result" if script.result == "none" else f"{len(self.result())} bytes"
                texts.append(f"result stored: {stored}")
            elif word == "canceled":
                texts.append("received SIGTERM: job canceled")
        last = self.epoch + (ended if ended is not None else now - self.created)
        step = max(0.0, last - start) / max(1, len(texts))
        lines = [(start + i * step, text) for i, text in enumerate(texts)]
        return [line for line in lines if line[0] <= self.epoch + (now - self.created)]

    def log_ndjson(self, now: float) -> bytes:
        """The log as ``GET /jobs/{id}/log`` streams it."""
        rows = [json.dumps({"date": iso(at), "log": text}) for at, text in self.log_lines(now)]
        return "".join(row + "\n" for row in rows).encode()


def path_safe(value: str) -> str:
    if not value or any(c in value for c in "/?#%") or len(value) > 256:
        raise ValueError("must be 1-256 characters without '/', '?', '#' or '%'")
    return value


def iso(epoch: float) -> str:
    """ISO 8601 in UTC with a ``Z`` (what ``Job.log`` needs: it strips the last character)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
