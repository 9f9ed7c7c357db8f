"""The EarthDaily EarthOne simulator: compute jobs and functions, catalog storage, IAM.

Served under ``/earthone``, shaped like production (``platform_url`` is ``…/earthone``, so the
SDK's ``compute_url`` is ``…/earthone/compute/v1`` and its ``catalog_v2_url``
``…/earthone/metadata/v1/catalog/v2``; its ``iam_url`` is ``…/earthone/iam``):

    POST iam/token                                  refresh token → JWT (userid, org claims)
    GET  compute/v1/jobs/{id}                       a Job (``?include=timings`` adds timings)
    GET  compute/v1/jobs/{id}/log                   its log, NDJSON; 404 until it ran
    POST compute/v1/jobs/{id}/cancel                ask to cancel → the Job
    GET  compute/v1/jobs                            search, paged (:mod:`.earthone_query`)
    POST compute/v1/jobs/cancel                     cancel a search's jobs → list of Jobs
    GET  compute/v1/functions/{id}                  a Function (``?include=job.statistics``)
    GET  compute/v1/functions/{id}/log              its build log, gzip
    GET  metadata/v1/catalog/v2/storage/{blob id}            a Blob (JSON:API ``storage``)
    GET  metadata/v1/catalog/v2/storage/download/{blob id}   ``storage_download``: a signed URL
    GET  signed/{blob id}?expires&signature         the blob's bytes; no Authorization allowed

Jobs and functions play scripts (:mod:`.earthone_jobs`); the catalog is
:mod:`.earthone_catalog`, IAM and the configuration :mod:`.earthone_iam`. Compute errors are
``{"detail": ...}``. Every compute and catalog call needs a JWT from ``iam/token`` that has not
expired.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from taskwarden.simulator.earthone_catalog import Catalog, stream
from taskwarden.simulator.earthone_iam import EarthOneConfig, Iam, iam_error
from taskwarden.simulator.earthone_jobs import (
    ACTIVE,
    JOB_WORDS,
    SPECS,
    EOFunction,
    EOFunctionSpec,
    EOJob,
    EOJobSpec,
)
from taskwarden.simulator.earthone_query import JobQuery, QueryError, filter_of
from taskwarden.simulator.faults import FAULT_SCOPE_KEY, FaultBook, Stats, route_maker

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

NAME = "earthone"
PREFIX = "/earthone"
C = "compute/v1"


class EarthOneSimulator:
    """EarthOne's state: functions, their jobs, and the IAM service."""

    name = NAME
    prefix = PREFIX

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.config = EarthOneConfig()
        self.iam = Iam(clock, self.config)
        self.catalog = Catalog(clock, self.iam, self.result_of, PREFIX)
        self.clear()

    @property
    def counters(self) -> dict[str, int]:
        """Tokens ``issued`` and ``refused`` by iam/token, and 401s (``unauthorized``)."""
        return dict(self.iam.counters)

    @property
    def namespace(self) -> str:
        """The default function namespace: ``<org>:<userid>`` (``<userid>`` with no org)."""
        org, user = self.config.org, self.config.userid
        return f"{org}:{user}" if org else user

    def env(self, root_url: str) -> dict[str, str]:
        """The ``TASKWARDEN_*`` settings that point taskwarden at this simulator."""
        var = "TASKWARDEN_PROVIDERS__EARTHONE__"
        client_id, refresh = next(iter(self.config.clients.items()))
        return {
            f"{var}PLATFORM_URL": f"{root_url}{PREFIX}",
            f"{var}IAM_URL": f"{root_url}{PREFIX}/iam",
            f"{var}CLIENT_ID": client_id,
            f"{var}REFRESH_TOKEN": refresh,
        }

    def sdk_env(self, root_url: str) -> dict[str, str]:
        """The ``EARTHONE_*`` variables that point the real SDK at this simulator."""
        return {
            "EARTHONE_ENV": "production",
            "EARTHONE_PLATFORM_URL": f"{root_url}{PREFIX}",
            "EARTHONE_IAM_URL": f"{root_url}{PREFIX}/iam",
        }

    # -- scripting -------------------------------------------------------------------------
    def add_job(self, **fields: Any) -> EOJob:
        """A job (of ``function_id``, or of a function of its own); its clock starts now."""
        job = self.add([EOJobSpec(**fields)])[0]
        assert isinstance(job, EOJob)
        return job

    def add_function(self, **fields: Any) -> EOFunction:
        """A function with its ``jobs``; ``.jobs`` lists their ids."""
        function = self.add([EOFunctionSpec(**fields)])[0]
        assert isinstance(function, EOFunction)
        return function

    def add(self, specs: Iterable[EOJobSpec | EOFunctionSpec]) -> list[EOJob | EOFunction]:
        now = self.clock.now()
        added: list[EOJob | EOFunction] = []
        for spec in specs:
            if isinstance(spec, EOFunctionSpec):
                added.append(self._add_function(spec, now))
                continue
            function = self.functions.get(spec.function_id or "")
            if function is None:
                fid = spec.function_id or f"fn-{spec.job_id}"
                function = self._add_function(EOFunctionSpec(function_id=fid), now)
            added.append(self._add_job(spec, function, now, len(function.jobs)))
        return added

    def _add_function(self, spec: EOFunctionSpec, now: float) -> EOFunction:
        namespace = spec.namespace or self.namespace
        function = EOFunction(spec, namespace, now, self.clock.epoch(now), [])
        self.functions[spec.function_id] = function
        base = EOJobSpec(**spec.job)
        for index in range(spec.jobs):
            fails = index >= spec.jobs - spec.failures
            job_spec = base.model_copy(
                update={
                    "job_id": f"{spec.function_id}-{index:05d}",
                    "function_id": spec.function_id,
                    "pending_seconds": base.pending_seconds + index * spec.stagger,
                    **({"outcome": "failure"} if fails else {}),
                }
            )
            self._add_job(job_spec, function, function.ready_at, index)
        return function

    def _add_job(self, spec: EOJobSpec, function: EOFunction, at: float, index: int) -> EOJob:
        job = EOJob(spec, spec.seed or spec.job_id, at, self.clock.epoch(at))
        job.function_id, job.index = function.function_id, index
        self.jobs[spec.job_id] = job
        function.jobs.append(spec.job_id)
        return job

    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add from JSON specs, each with ``kind`` job or function (the control API)."""
        return [self._summary(task) for task in self.add(SPECS.validate_python(items))]

    def describe(self, task_id: str) -> dict[str, Any] | None:
        """A job or function by id: its script and current document."""
        now = self.clock.now()
        if (job := self.jobs.get(task_id)) is not None:
            return {**self._summary(job), "spec": job.script.model_dump(),
                    "document": job.document(now)}  # fmt: skip
        if (function := self.functions.get(task_id)) is not None:
            return {**self._summary(function), "spec": function.spec.model_dump(),
                    "document": function.document(now, self.statistics(function))}  # fmt: skip
        return None

    def _summary(self, task: EOJob | EOFunction) -> dict[str, Any]:
        if isinstance(task, EOFunction):
            return {"kind": "function", "function_id": task.function_id,
                    "jobs": len(task.jobs), "registration": task.registration}  # fmt: skip
        has_result = task.script.outcome == "success_file" and task.script.result != "none"
        return {"kind": "job", "job_id": task.job_id, "function_id": task.function_id,
                "result_sha256": task.result_sha256 if has_result else None,
                "registration": task.registration}  # fmt: skip

    def statistics(self, function: EOFunction) -> dict[str, int]:
        """``job_statistics``: the function's jobs counted by status word, in the config's style."""
        now = self.clock.now()
        counts = dict.fromkeys(JOB_WORDS, 0)
        for job_id in function.jobs:
            counts[self.jobs[job_id].status(now)] += 1
        style = self.config.statistics_words
        if style == "active":
            return {word: counts[word] for word in ACTIVE}
        if style == "nonzero":
            return {word: n for word, n in counts.items() if n}
        return counts

    def clear(self) -> None:
        """Forget every function and job (tokens issued stay valid)."""
        self.functions: dict[str, EOFunction] = {}
        self.jobs: dict[str, EOJob] = {}
        self.iam.counters.clear()

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change some :class:`EarthOneConfig` settings; raises ``ValidationError``."""
        self.config = EarthOneConfig.model_validate({**self.config.model_dump(), **settings})
        self.iam.config = self.config  # the catalog reads it there
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump()

    # -- HTTP ------------------------------------------------------------------------------
    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The platform's routes, counted and fault-injectable, relative to ``prefix``."""
        route = route_maker(NAME, faults, stats, error)
        job, fn = _param("job_id"), _param("function_id")
        word = frozenset({"unknown_status"})
        return [
            route("POST", "iam/token", self.iam.token, error=iam_error),
            route("GET", f"{C}/jobs", self._search),
            route("POST", f"{C}/jobs/cancel", self._cancel_many),
            route("GET", f"{C}/jobs/{{job_id}}", self._job, task_of=job, kinds=word),
            route("GET", f"{C}/jobs/{{job_id}}/log", self._log, task_of=job, json=False),
            route("POST", f"{C}/jobs/{{job_id}}/cancel", self._cancel, task_of=job),
            route("GET", f"{C}/functions/{{function_id}}", self._function, task_of=fn),
            route("GET", f"{C}/functions/{{function_id}}/log", self._build_log, task_of=fn,
                  json=False),
            *self.catalog.routes(route),
        ]  # fmt: skip

    def _denied(self, request: Request) -> Response | None:
        reason = self.iam.refusal(request)
        if reason is None:
            return None
        self.iam.counters["unauthorized"] += 1
        return error(401, reason)

    def _find(self, request: Request) -> EOJob | Response:
        if (denied := self._denied(request)) is not None:
            return denied
        job = self.jobs.get(request.path_params["job_id"])
        return job if job is not None else error(404, "Job not found")

    async def _job(self, request: Request) -> Response:
        job = self._find(request)
        if isinstance(job, Response):
            return job
        timings = "timings" in request.query_params.getlist("include")
        doc = job.document(self.clock.now(), timings)
        fault = request.scope.get(FAULT_SCOPE_KEY)
        if fault is not None and fault.kind == "unknown_status":
            doc["status"] = fault.word  # a word the SDK itself would refuse
        return JSONResponse(doc)

    async def _log(self, request: Request) -> Response:
        job = self._find(request)
        if isinstance(job, Response):
            return job
        now = self.clock.now()
        if not job.ran(now):  # a guess: the platform has no log of a job that never ran
            return error(404, "Job log not found")
        return stream(job.log_ndjson(now), "application/x-ndjson")

    async def _cancel(self, request: Request) -> Response:
        job = self._find(request)
        if isinstance(job, Response):
            return job
        now = self.clock.now()
        job.cancel(now)  # on a finished job: nothing, and the job as it is (a guess)
        return JSONResponse(job.document(now))

    async def _search(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        config = self.config
        try:
            query = JobQuery.parse(request.query_params, config.page_size, config.max_page_size)
        except QueryError as exc:
            return error(400, str(exc))
        return JSONResponse(query.page(self._matching(query)))

    async def _cancel_many(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            query = filter_of(json.loads(await request.body() or b"{}"))
        except (QueryError, ValueError) as exc:
            return error(400, str(exc))
        now = self.clock.now()
        matched = self._matching(query)
        for doc in matched:
            self.jobs[doc["id"]].cancel(now)
        return JSONResponse([self.jobs[doc["id"]].document(now) for doc in matched])

    def _matching(self, query: JobQuery) -> list[dict[str, Any]]:
        now = self.clock.now()
        timings = "timings" in query.include
        docs = [job.document(now, timings) for job in list(self.jobs.values())]
        return query.ordered([doc for doc in docs if query.matches(doc)])

    async def _function(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        function = self.functions.get(request.path_params["function_id"])
        if function is None:
            return error(404, "Function not found")
        includes = request.query_params.getlist("include")
        stats = self.statistics(function) if "job.statistics" in includes else None
        return JSONResponse(function.document(self.clock.now(), stats))

    async def _build_log(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        function = self.functions.get(request.path_params["function_id"])
        if function is None:
            return error(404, "Function not found")
        return Response(gzip.compress(function.build_log()), media_type="application/gzip")

    def result_of(self, blob_id: str) -> EOJob | None:
        """The job whose stored result ``blob_id`` is, if it has one now."""
        kind, _, rest = blob_id.partition("/")
        namespace, _, name = rest.partition("/")
        function_id, _, job_id = name.partition("/")
        job = self.jobs.get(job_id)
        function = self.functions.get(function_id)
        if kind != "compute" or job is None or function is None or job.function_id != function_id:
            return None
        if function.namespace != namespace or not job.has_result(self.clock.now()):
            return None
        return job


def error(status: int, detail: str) -> Response:
    """A compute error: ``{"detail": ...}``, as ``ApiSession._rewrite_error`` reads it."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status, headers)


def _param(name: str) -> Any:
    def task_of(params: Mapping[str, Any]) -> str | None:
        value = params.get(name)
        return value if isinstance(value, str) else None

    return task_of
