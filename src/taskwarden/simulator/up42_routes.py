"""The HTTP handlers of the UP42 simulator (:mod:`taskwarden.simulator.up42` has the state)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from taskwarden.simulator.up42 import (
    JOB,
    KEYCLOAK,
    TASK,
    base_url,
    expired,
    fault_word,
    problem,
    v1_error,
)
from taskwarden.simulator.up42_jobs import Up42Job, Up42Task

if TYPE_CHECKING:
    from taskwarden.simulator.up42 import Up42Simulator

RouteMaker = Callable[..., Route]


def build(sim: Up42Simulator, route: RouteMaker) -> list[BaseRoute]:
    """Every UP42 route, as ``route(method, path, handler, **endpoint options)`` makes them."""

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
        if (denied := sim.denied(request)) is not None:
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
        url = sim.sign(base_url(request), name, task.job.spec.url_ttl)
        return JSONResponse({"data": {"url": url}, "error": None})

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
        name = request.path_params["owner"]
        query = request.query_params
        expires, signature = query.get("expires", ""), query.get("signature", "")
        if not sim.signature_ok(name, expires, signature):
            return PlainTextResponse("<Error><Code>SignatureDoesNotMatch</Code></Error>", 403)
        task = sim.tasks.get(name) or (sim.jobs[name].results if name in sim.jobs else None)
        if task is None:
            return PlainTextResponse("<Error><Code>NoSuchKey</Code></Error>", 404)
        task.job.downloads += 1
        if (
            task.job.downloads <= task.job.spec.expired_downloads
            or float(expires) <= sim.clock.now()
        ):
            return expired(name)
        return Response(task.tarball(), media_type="application/x-gzip")

    async def processing(request: Request) -> Response:
        if (denied := sim.denied(request, v2=True)) is not None:
            return denied
        job = sim.processing.get(request.path_params["id"])
        if job is None:
            return problem(404, f"Job {request.path_params['id']} not found")
        document = job.document(sim.clock.now(), base_url(request), fault_word(request))
        return JSONResponse(document)

    async def stac_root(request: Request) -> Response:
        if (denied := sim.denied(request, v2=True)) is not None:
            return denied
        root = f"{base_url(request)}/v2/assets/stac"
        return JSONResponse(
            {
                "type": "Catalog",
                "id": "up42-storage",
                "stac_version": "1.0.0",
                "description": "UP42 storage (simulated)",
                "conformsTo": [
                    "https://api.stacspec.org/v1.0.0/core",
                    "https://api.stacspec.org/v1.0.0/collections",
                    "https://api.stacspec.org/v1.0.0/item-search",
                ],
                "links": [
                    {"rel": "self", "href": root, "type": "application/json"},
                    {"rel": "root", "href": root, "type": "application/json"},
                    {"rel": "data", "href": f"{root}/collections", "type": "application/json"},
                    {"rel": "search", "href": f"{root}/search", "type": "application/geo+json"},
                ],
            }
        )

    async def collection(request: Request) -> Response:
        if (denied := sim.denied(request, v2=True)) is not None:
            return denied
        wanted = request.path_params["id"]
        now = sim.clock.now()
        for job in list(sim.processing.values()):
            if job.spec.collection_id == wanted and job.word(now) in ("successful", "captured"):
                return JSONResponse(job.collection(base_url(request)))
        return problem(404, f"Collection {wanted} not found")

    async def userinfo(request: Request) -> Response:
        if (denied := sim.denied(request, v2=True)) is not None:
            return denied
        return JSONResponse({"sub": "sim-account", "email_verified": True})

    async def me(request: Request) -> Response:
        if (denied := sim.denied(request)) is not None:
            return denied
        return JSONResponse({"data": {"id": "sim-workspace", "email": "sim@up42"}, "error": None})

    quiet = {"json": False}
    status = frozenset({"unknown_status"})
    return [
        route("POST", "oauth/token", sim.grant),
        route("POST", f"{KEYCLOAK}/token", sim.grant),
        route("GET", f"{KEYCLOAK}/userinfo", userinfo),
        route("GET", "users/me", me),
        route("GET", JOB, get_job, task_of=job_of, kinds=status),
        route("POST", f"{JOB}/cancel/", cancel, task_of=job_of),
        route("GET", f"{JOB}/tasks/", tasks, task_of=job_of, kinds=status),
        route("GET", f"{JOB}/outputs/data-json/", data_json, task_of=job_of),
        route("GET", f"{JOB}/downloads/results/", results, task_of=job_of),
        route("GET", f"{TASK}/outputs/data-json/", data_json, task_of=task_of),
        route("GET", f"{TASK}/downloads/results/", results, task_of=task_of),
        route("GET", f"{TASK}/outputs/quicklooks/", quicklooks, task_of=task_of),
        route("GET", f"{TASK}/outputs/quicklooks/{{name}}", quicklook, task_of=task_of, **quiet),
        route("GET", f"{TASK}/logs", logs, task_of=task_of, **quiet),
        route("GET", "signed/{owner}/output.tgz", signed, task_of=id_of, **quiet),
        route(
            "GET", "v2/processing/jobs/{id}", processing, task_of=id_of, kinds=status, error=problem
        ),
        route("GET", "v2/assets/stac/", stac_root, error=problem),
        route("GET", "v2/assets/stac/collections/{id}", collection, error=problem),
    ]
