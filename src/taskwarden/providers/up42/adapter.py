"""The UP42 adapter: v1 jobs, v1 job tasks, and v2 processing jobs.

What to register (``remote_id``, ``params``):

    a v1 job        the job id        {"project_id": P}
    a v1 job task   the job task id   {"project_id": P, "job_id": J}
    a v2 job        the job id        {} or {"kind": "processing"}

A job task is watched under its own id, so it gets its own watch and its own archive folder
(two tasks of one job never overwrite each other). ``kind`` (``job``, ``jobtask``,
``processing``) may be given; it must agree with the other params.

Status checks (paths relative to ``settings.providers.up42.base_url``):

    GET projects/{p}/jobs/{j}          a job: data.status; its tasks/ too while RUNNING
                                       (progress = finished tasks / tasks), and once it
                                       FAILED or ERROR (the failed task's log tail explains)
    GET projects/{p}/jobs/{j}/tasks/   a job task: the element with its id
    GET v2/processing/jobs/{id}        a processing job

v1 words: ``NOT_STARTED`` / ``NOT STARTED`` / ``PENDING`` → pending; ``RUNNING`` and
``CANCELLING`` (on its way to cancelled) → running; ``SUCCEEDED`` → succeeded; ``FAILED`` /
``ERROR`` → failed; ``CANCELLED`` → cancelled. v2 words: see :func:`v2_remote`.

Each observation carries the platform's timestamps (v1 ``createdAt``/``startedAt``/``finishedAt``,
v2 ``created``/``started``/``finished``) and small facts as ``details``: a v2 job's credits and
error names, a v1 job's task counts and failed task, a v1 task's block.

What is archived is listed in :mod:`taskwarden.providers.up42.outputs`, what a failure leaves
behind (:meth:`Up42Provider.list_diagnostics`) in :mod:`.diagnostics`; abort cancels a v1 job
(``POST projects/{p}/jobs/{j}/cancel/``). UP42 cancels whole jobs only and has no cancel for
processing jobs, so aborting a job task or a processing job is refused with a reason.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from taskwarden import net
from taskwarden.config import Settings, Up42Settings
from taskwarden.errors import RemoteNotFound, RequestRejected, TaskwardenError
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.providers.up42.api import NAME, Up42Api, remote_time
from taskwarden.providers.up42.diagnostics import Diagnostics
from taskwarden.providers.up42.outputs import Outputs

Kind = Literal["job", "jobtask", "processing"]
V1_STATES = {
    "NOT_STARTED": Remote.PENDING,
    "NOT STARTED": Remote.PENDING,  # the old SDK's spelling
    "PENDING": Remote.PENDING,
    "RUNNING": Remote.RUNNING,
    "CANCELLING": Remote.RUNNING,
    "SUCCEEDED": Remote.SUCCEEDED,
    "FAILED": Remote.FAILED,
    "ERROR": Remote.FAILED,
    "CANCELLED": Remote.CANCELLED,
}
V2_PENDING = frozenset({"created", "licensed", "valid", "accepted"})
V2_REFUSED = {
    "invalid": "UP42 found the job definition invalid",
    "rejected": "UP42 rejected the job (credits could not be reserved)",
    "unlicensed": "no license for this process",
    "failed": "the job failed",
    "released": "the job failed (credits released)",
}
PARAMS = frozenset({"kind", "project_id", "job_id"})
LOG_TAIL_BYTES = 16 * 1024
MAX_MESSAGE = 300


def build(settings: Settings, client: httpx.AsyncClient) -> Up42Provider:
    """The UP42 adapter for this process, sharing its HTTP client."""
    return Up42Provider(settings.providers.up42, client)


def validate(settings: Settings, target: Target) -> None:
    """Refuse (RequestRejected) params that do not name a job, job task or processing job."""
    parse_target(target)


@dataclass(frozen=True)
class Up42Target:
    """A registration read: which kind of UP42 job, and where it lives."""

    kind: Kind
    id: str
    project_id: str | None = None
    job_id: str | None = None

    @property
    def job_path(self) -> str:
        """``projects/{p}/jobs/{j}`` of a v1 job, or of a job task's job."""
        job = self.id if self.kind == "job" else self.job_id
        return f"projects/{_seg(self.project_id or '')}/jobs/{_seg(job or '')}"

    @property
    def task_path(self) -> str:
        return f"{self.job_path}/tasks/{_seg(self.id)}"


def parse_target(target: Target) -> Up42Target:
    """Read the registration's params; a malformed one is :class:`RequestRejected`."""
    params = dict(target.params)
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise RequestRejected(
            f"unknown up42 params {unknown}; allowed: kind, project_id, job_id", provider=NAME
        )
    for key, value in params.items():
        if not isinstance(value, str) or not value or len(value) > 256:
            raise RequestRejected(f"up42 param {key} must be a non-empty string", provider=NAME)
    project, job = params.get("project_id"), params.get("job_id")
    implied: Kind = "jobtask" if job else "job" if project else "processing"
    kind = params.get("kind", implied)
    if kind != implied:
        needs = {"job": "project_id", "jobtask": "project_id and job_id", "processing": "neither"}
        raise RequestRejected(
            f"up42 kind {kind!r} needs {needs.get(kind, 'a kind of job, jobtask or processing')}"
            f" (got params {sorted(params)})",
            provider=NAME,
        )
    if kind == "jobtask" and not project:
        raise RequestRejected("an up42 job task needs project_id and job_id", provider=NAME)
    return Up42Target(kind, target.remote_id, project, job)


def v2_remote(word: str, settle: bool) -> Remote:
    """A processing job's word on the canonical lifecycle.

    The job's outcome is known at ``successful`` / ``failed``; the credits settle afterwards
    (``captured`` / ``released``), and the current SDK stops tracking at ``successful``. So by
    default ``successful`` and ``captured`` are succeeded, ``failed`` and ``released`` failed;
    with ``settle`` (``settle_credits``) ``successful`` and ``failed`` stay running until the
    credits settle. ``invalid``, ``rejected`` and ``unlicensed`` are final failures.
    """
    if word in V2_PENDING:
        return Remote.PENDING
    if word == "running":
        return Remote.RUNNING
    if word in ("successful", "failed") and settle:
        return Remote.RUNNING
    if word in ("successful", "captured"):
        return Remote.SUCCEEDED
    if word in V2_REFUSED:
        return Remote.FAILED
    return Remote.UNKNOWN


class Up42Provider:
    """A :class:`~taskwarden.providers.base.Provider` for UP42 jobs, tasks and processing."""

    name = NAME

    def __init__(self, settings: Up42Settings, client: httpx.AsyncClient) -> None:
        self._api = Up42Api(settings, client)
        self._settle = settings.settle_credits
        self._outputs = Outputs(self._api, settings)
        self._diagnostics = Diagnostics(self._api, self._outputs)

    async def fetch_status(self, target: Target) -> Observation:
        """One status check (two while a v1 job runs or has just failed)."""
        up = parse_target(target)
        if up.kind == "processing":
            return await self._processing_status(up)
        if up.kind == "jobtask":
            task = await self.task_document(up)
            word = _word(task.get("status"))
            remote = V1_STATES.get(word, Remote.UNKNOWN)
            message = await self._log_tail(up) if remote is Remote.FAILED else None
            block = _dict(task.get("block"))
            details = _facts(block=block.get("name"), block_version=task.get("blockVersion"))
            return Observation(
                remote, word, message=message, name=_str(task.get("name")), details=details,
                remote_started_at=remote_time(task.get("startedAt")),
                remote_ended_at=remote_time(task.get("finishedAt")),
            )  # fmt: skip
        job, _ = await self._api.v1(up.job_path, what=f"up42 job {up.id}")
        job = job if isinstance(job, dict) else {}
        word = _word(job.get("status"))
        remote = V1_STATES.get(word, Remote.UNKNOWN)
        progress, message, details = None, None, None
        if remote is Remote.RUNNING and word == "RUNNING":
            progress, details = await self._job_progress(up)
        elif remote is Remote.FAILED:
            message, details = await self._job_failure(up)
        return Observation(
            remote, word, progress, message, _str(job.get("name")),
            remote_created_at=remote_time(job.get("createdAt")),
            remote_started_at=remote_time(job.get("startedAt")),
            remote_ended_at=remote_time(job.get("finishedAt")),
            details=details,
        )  # fmt: skip

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """The outputs of a succeeded job, task or processing job (see :mod:`.outputs`)."""
        up = parse_target(target)
        if up.kind == "processing":
            return await self._outputs.processing(up.id)
        if up.kind == "jobtask":
            task = await self.task_document(up)
            return await self._outputs.v1_task(target.remote_id, up.task_path, task)
        return await self._outputs.v1_job(target.remote_id, up.job_path, up.id)

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        """What a job, task or processing job that did not succeed leaves behind (see
        :mod:`.diagnostics`): its documents and whole logs."""
        up = parse_target(target)
        if up.kind == "processing":
            return await self._diagnostics.processing(up.id)
        if up.kind == "jobtask":
            return await self._diagnostics.v1_task(up.job_path, await self.task_document(up))
        return await self._diagnostics.v1_job(up.job_path, up.id)

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output: inline, from the spooled results, or a GET with the bearer."""
        return self._outputs.open(target.remote_id, ref)

    async def abort(self, target: Target) -> None:
        """Cancel a v1 job; refuse (with the reason) for a job task or a processing job."""
        up = parse_target(target)
        if up.kind == "jobtask":
            raise RequestRejected(
                f"UP42 cannot cancel one job task; cancel its job {up.job_id} instead",
                provider=NAME,
            )
        if up.kind == "processing":
            raise RequestRejected("UP42 processing jobs cannot be cancelled", provider=NAME)
        await self._api.request(
            "POST", self._api.url(f"{up.job_path}/cancel/"), what=f"up42 job {up.id}"
        )

    async def task_document(self, up: Up42Target) -> dict[str, Any]:
        """A job task: the element of its job's ``tasks/`` list that has its id."""
        tasks, _ = await self._api.v1(f"{up.job_path}/tasks/", what=f"up42 job {up.job_id}")
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, dict) and task.get("id") == up.id:
                return task
        raise RemoteNotFound(
            f"up42 job task {up.id} is not a task of job {up.job_id}", provider=NAME
        )

    async def _processing_status(self, up: Up42Target) -> Observation:
        job, _ = await self._api.json(
            self._api.url(f"v2/processing/jobs/{_seg(up.id)}"), what=f"up42 processing job {up.id}"
        )
        job = job if isinstance(job, dict) else {}
        word = _word(job.get("status"))
        remote = v2_remote(word, self._settle)
        message = None
        results = _dict(job.get("results"))
        if remote is Remote.FAILED:
            errors = v2_errors(results.get("errors")) if results else None
            message = "; ".join(part for part in (V2_REFUSED.get(word), errors) if part)
        progress = 1.0 if remote is Remote.RUNNING and word != "running" else None
        credits = _dict(job.get("creditConsumption")).get("credits")
        listed = results.get("errors")
        names = [
            e["name"]
            for e in (listed[:5] if isinstance(listed, list) else [])
            if isinstance(e, dict) and _str(e.get("name"))
        ]
        return Observation(
            remote, word, progress, message, _str(job.get("processID")),
            remote_created_at=remote_time(job.get("created")),
            remote_started_at=remote_time(job.get("started")),
            remote_ended_at=remote_time(job.get("finished")),
            details=_facts(credits=credits, errors=names or None),
        )  # fmt: skip

    async def _tasks(self, up: Up42Target) -> list[dict[str, Any]] | None:
        # decoration: a failed tasks/ call must not cost the observation
        try:
            tasks, _ = await self._api.v1(f"{up.job_path}/tasks/", what=f"up42 job {up.id}")
        except TaskwardenError:
            return None
        return [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else None

    async def _job_progress(self, up: Up42Target) -> tuple[float | None, dict[str, Any] | None]:
        tasks = await self._tasks(up)
        if not tasks:
            return None, None
        done = sum(1 for t in tasks if t.get("status") == "SUCCEEDED")
        return done / len(tasks), _facts(tasks=len(tasks), tasks_succeeded=done)

    async def _job_failure(self, up: Up42Target) -> tuple[str | None, dict[str, Any] | None]:
        """Which task failed and the tail of its log, or None when UP42 will not say."""
        tasks = await self._tasks(up)
        for task in tasks or []:
            if task.get("status") in ("FAILED", "ERROR"):
                failed = Up42Target("jobtask", str(task.get("id")), up.project_id, up.id)
                tail = await self._log_tail(failed)
                said = f"task {task.get('name')} {task.get('status')}"
                facts = _facts(tasks=len(tasks or []), failed_task=task.get("id"))
                if tail:
                    said = f"{said}: {_cap(tail, MAX_MESSAGE - len(said) - 2)}"
                return said, facts
        return None, None

    async def _log_tail(self, up: Up42Target) -> str | None:
        """The last lines of a job task's log (read whole, only its end kept)."""
        tail: deque[bytes] = deque()
        kept = 0
        try:
            async with self._api.stream(
                self._api.url(f"{up.task_path}/logs"), what=f"up42 job task {up.id} log"
            ) as response:
                async for chunk in net.iter_body(response, provider=NAME):
                    tail.append(chunk)
                    kept += len(chunk)
                    while kept - len(tail[0]) >= LOG_TAIL_BYTES:
                        kept -= len(tail.popleft())
        except TaskwardenError:
            return None
        text = b"".join(tail)[-LOG_TAIL_BYTES:].decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return _cap(" / ".join(lines[-3:]), MAX_MESSAGE) if lines else None


def v2_errors(errors: Any) -> str | None:
    """``results.errors`` (``[{"name", "message"}]``) as ``name: message; ...``."""
    if not isinstance(errors, list):
        return net.error_message(errors)
    parts = []
    for error in errors:
        if isinstance(error, dict) and error.get("message"):
            name = error.get("name")
            parts.append(f"{name}: {error['message']}" if name else str(error["message"]))
        elif error:
            parts.append(net.error_message(error) or str(error))
    return _cap("; ".join(parts), MAX_MESSAGE) if parts else None


def _facts(**facts: Any) -> dict[str, Any] | None:
    """The facts that are known (small strings, numbers and lists only), or None."""
    kept = {
        key: value[:120] if isinstance(value, str) else value
        for key, value in facts.items()
        if isinstance(value, str | int | float | list) and not isinstance(value, bool)
    }
    return kept or None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _word(raw: Any) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _cap(text: str, limit: int) -> str:
    # the end of a log says most: keep it
    limit = max(limit, 40)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _seg(value: str) -> str:
    return quote(value, safe="")
