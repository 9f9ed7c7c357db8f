"""The HTTP handlers of the UP42 simulator's logins and v1 jobs (the state is
:class:`~taskwarden.simulator.up42_state.Up42World`; v2 routes are in :mod:`.up42_stac`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from taskwarden.simulator.up42_auth import KEYCLOAK_TOKEN, LEGACY_TOKEN
from taskwarden.simulator.up42_http import (
    JOB,
    KEYCLOAK,
    TASK,
    WORKSPACE,
    expired,
    fault_word,
    signed_refusal,
    storage_base,
    storage_error,
    v1_error,
)
from taskwarden.simulator.up42_jobs import Up42Job, Up42Task
from taskwarden.simulator.up42_state import Up42World

RouteMaker = Callable[..., Route]


def build(sim: Up42World, route: RouteMaker) -> list[BaseRoute]:
    """The login and v1 routes, as ``route(method, path, handler, **options)`` makes them."""

    def job_of(params: Mapping[str, Any]) -> str | None:
        value = params.get("job")
        return value if isinstance(value, str) else None

    def task_of(params: Mapping[str, Any]) -> str | None:
        value = params.get("task")
        return value if isinstance(value, str) else None

    def id_of(params: Mapping[str, Any]) -> str | None:
        value = params.get("id") or params.get("owner")
        return value if isinstance(value, str) else None

    def find_job(request: Request) -> Up42Job | Response:
        if (denied := sim.tokens.denied(request)) is not None:
            return denied
        job = sim.jobs.get(request.path_params["job"])
        if job is None or job.spec.project_id != request.path_params["project"]:
            return v1_error(404, f"Job {request.path_params['job']} not found")
        return job

    def find_task(request: Request) -> Up42Task | Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        task = sim.tasks.get(request.path_params["task"])
        if task is None or task.job is not job:
            return v1_error(404, f"JobTask {request.path_params['task']} not found")
        return task

    def finished(task: Up42Task, word: str) -> Response | None:
        if word == "SUCCEEDED":
            return None
        return v1_error(404, f"No outputs: {task.id} is {word}")

    async def get_job(request: Request) -> Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        return JSONResponse(
            {"data": job.document(sim.clock.now(), fault_word(request)), "error": None}
        )

    async def cancel(request: Request) -> Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        job.abort(sim.clock.now())
        return Response(status_code=204)

    async def tasks(request: Request) -> Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        now, word = sim.clock.now(), fault_word(request)
        docs = [t.document(now) | ({"status": word} if word else {}) for t in job.tasks]
        return JSONResponse({"data": docs, "error": None})

    def owner(request: Request) -> Up42Task | Response:
        """The task whose outputs a job- or task-level output route asks for, once finished."""
        if "task" in request.path_params:
            task = find_task(request)
            if isinstance(task, Response):
                return task
            word = task.job.task_word(task.index, sim.clock.now())
        else:
            job = find_job(request)
            if isinstance(job, Response):
                return job
            task, word = job.results, job.word(sim.clock.now())
        return finished(task, word) or task

    async def data_json(request: Request) -> Response:
        task = owner(request)
        if isinstance(task, Response):
            return task
        return JSONResponse(task.data_json())

    async def results(request: Request) -> Response:
        task = owner(request)
        if isinstance(task, Response):
            return task
        name = request.path_params.get("task") or request.path_params["job"]
        base = storage_base(request, sim.auth.storage_host)
        expires = sim.clock.now() + task.job.spec.url_ttl
        url = sim.signer.sign(base, f"signed/{name}/{task.results_file}", expires)
        return JSONResponse({"data": {"url": url}, "error": None})

    async def credits(request: Request) -> Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        return JSONResponse({"data": {"creditsUsed": job.spec.credits}, "error": None})

    async def quicklooks(request: Request) -> Response:
        task = find_task(request)
        if isinstance(task, Response):
            return task
        return JSONResponse({"data": list(task.spec.quicklooks), "error": None})

    async def quicklook(request: Request) -> Response:
        task = find_task(request)
        if isinstance(task, Response):
            return task
        name = request.path_params["name"]
        if name not in task.spec.quicklooks:
            return v1_error(404, f"Quicklook {name} not found")
        return Response(task.quicklook_bytes(name), media_type="image/jpeg")

    async def logs(request: Request) -> Response:
        task = find_task(request)
        if isinstance(task, Response):
            return task
        return PlainTextResponse(task.log(sim.clock.now()))

    async def signed(request: Request) -> Response:
        name, file = request.path_params["owner"], request.url.path.rpartition("/")[2]
        if not sim.signer.valid(f"signed/{name}/{file}", request.query_params):
            return storage_error(403, "SignatureDoesNotMatch", "Invalid signature.")
        if (refused := signed_refusal(request, f"{name}/{file}")) is not None:
            return refused
        task = sim.tasks.get(name) or (sim.jobs[name].results if name in sim.jobs else None)
        if task is None or task.results_file != file:
            return storage_error(404, "NoSuchKey", "The specified key does not exist.")
        task.job.downloads += 1
        expires = float(request.query_params["expires"])
        if task.job.downloads <= task.job.spec.expired_downloads or expires <= sim.clock.now():
            return expired(f"{name}/{file}")
        kind = "application/zip" if file.endswith(".zip") else "application/x-gzip"
        return Response(task.tarball(), media_type=kind)

    async def me(request: Request) -> Response:
        if (denied := sim.tokens.denied(request)) is not None:
            return denied
        return JSONResponse({"data": {"id": WORKSPACE, "email": "sim@up42"}, "error": None})

    quiet = {"json": False}
    status = frozenset({"unknown_status"})
    return [
        route("POST", LEGACY_TOKEN, sim.tokens.legacy),
        route("POST", KEYCLOAK_TOKEN, sim.tokens.keycloak),
        route("GET", f"{KEYCLOAK}/userinfo", sim.tokens.userinfo),
        route("GET", "users/me", me),
        route("GET", JOB, get_job, task_of=job_of, kinds=status),
        route("POST", f"{JOB}/cancel/", cancel, task_of=job_of),
        route("GET", f"{JOB}/tasks/", tasks, task_of=job_of, kinds=status),
        route("GET", f"{JOB}/credits", credits, task_of=job_of),
        route("GET", f"{JOB}/outputs/data-json/", data_json, task_of=job_of),
        route("GET", f"{JOB}/downloads/results/", results, task_of=job_of),
        route("GET", f"{TASK}/outputs/data-json/", data_json, task_of=task_of),
        route("GET", f"{TASK}/downloads/results/", results, task_of=task_of),
        route("GET", f"{TASK}/outputs/quicklooks/", quicklooks, task_of=task_of),
        route("GET", f"{TASK}/outputs/quicklooks/{{name}}", quicklook, task_of=task_of, **quiet),
        route("GET", f"{TASK}/logs", logs, task_of=task_of, **quiet),
        route("GET", "signed/{owner}/output.tgz", signed, task_of=id_of, **quiet),
        route("GET", "signed/{owner}/output.zip", signed, task_of=id_of, **quiet),
    ]
