"""The UP42 simulator: v1 jobs and job tasks, v2 processing jobs with their STAC results, logins,
signed URLs.

Served under ``/up42`` (what ``Up42Settings.base_url`` wants is ``http://127.0.0.1:<port>/up42``):

    POST realms/public/protocol/openid-connect/token   Keycloak, as up42-py 4.3 logs in
                                                       (client_id up42-sdk; see .up42_auth)
    GET  realms/public/protocol/openid-connect/userinfo {"sub": workspace}
    POST oauth/token                                   the v1 era's password grant or client
                                                       credentials (HTTP Basic project:key)
    GET  users/me                                      {"data": {"id": workspace}} (0.34.1)
    GET  projects/{p}/jobs/{j}                         {"data": job, "error": null}
    POST projects/{p}/jobs/{j}/cancel/                 204; the job goes CANCELLING, CANCELLED
    GET  projects/{p}/jobs/{j}/tasks/                  {"data": [task, ...]}
    GET  projects/{p}/jobs/{j}/credits                 {"data": {"creditsUsed": n}}
    GET  …/jobs/{j}[/tasks/{t}]/outputs/data-json/     GeoJSON FeatureCollection (no envelope)
    GET  …/jobs/{j}[/tasks/{t}]/downloads/results/     {"data": {"url": <signed URL>}}
    GET  …/tasks/{t}/outputs/quicklooks/[{name}]       {"data": [names]} / image bytes
    GET  …/tasks/{t}/logs                              text/plain
    GET  signed/{owner}/output.tgz|zip?expires=&signature=   the results, no auth; 400
                                                       ExpiredToken (Google Cloud Storage's)
    v2/processing/jobs…, v2/assets/…, signed-assets/…  see :mod:`.up42_stac`

v1 errors are ``{"data": null, "error": {"code", "message"}}``; v2 errors are RFC 7807 problem
documents; token errors are OAuth's ``{"error", "error_description"}``. Bearer tokens are checked
on every API route unless ``auth_required`` is off; tokens issued by the token routes live
``token_ttl`` simulation seconds while announcing ``announced_ttl`` in ``expires_in``. A signed
URL refuses a request that also carries an Authorization header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter
from starlette.routing import BaseRoute

from taskwarden.simulator import up42_routes, up42_stac
from taskwarden.simulator.faults import FaultBook, Stats, route_maker
from taskwarden.simulator.up42_auth import Up42Auth
from taskwarden.simulator.up42_http import NAME, PREFIX, v1_error
from taskwarden.simulator.up42_jobs import Up42JobSpec
from taskwarden.simulator.up42_processing import Up42ProcessingSpec
from taskwarden.simulator.up42_state import Up42World

__all__ = ["Up42Auth", "Up42Simulator"]

_JOB_SPECS = TypeAdapter(list[Up42JobSpec])
_PROCESSING_SPECS = TypeAdapter(list[Up42ProcessingSpec])


class Up42Simulator(Up42World):
    """UP42 as a platform of the simulation: its state, control API and routes."""

    name = NAME
    prefix = PREFIX

    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add jobs from JSON specs: ``{"kind": "processing", ...}``, else a v1 job."""
        jobs = [i for i in items if not (isinstance(i, dict) and i.get("kind") == "processing")]
        processing = [{k: v for k, v in i.items() if k != "kind"} for i in items if i not in jobs]
        job_specs = _JOB_SPECS.validate_python(
            [
                {k: v for k, v in i.items() if k != "kind"} if isinstance(i, dict) else i
                for i in jobs
            ]
        )
        processing_specs = _PROCESSING_SPECS.validate_python(processing)
        created: list[dict[str, Any]] = [
            {"kind": "job", "id": j.id, "project_id": j.spec.project_id,
             "tasks": [t.id for t in j.tasks]}
            for j in self.add_jobs(job_specs)
        ]  # fmt: skip
        created += [
            {"kind": "processing", "id": self.add_processing(spec).id} for spec in processing_specs
        ]
        return created

    def describe(self, job_id: str) -> dict[str, Any] | None:
        """A job's (or task's) script, what it shows now, and its outputs' checksums."""
        now = self.clock.now()
        if job_id in self.processing:
            job = self.processing[job_id]
            return {
                "spec": job.spec.model_dump(),
                "document": job.document(now, ""),
                "assets_sha256": job.assets_sha256,
            }
        task = self.tasks.get(job_id)
        if task is not None:
            return {
                "document": task.document(now),
                "results_sha256": task.results_sha256,
                "quicklooks_sha256": task.quicklooks_sha256,
            }
        if job_id not in self.jobs:
            return None
        v1 = self.jobs[job_id]
        return {
            "spec": v1.spec.model_dump(),
            "document": v1.document(now),
            "tasks": [t.document(now) for t in v1.tasks],
            "results_sha256": v1.results.results_sha256,
        }

    def clear(self) -> None:
        """Forget every job and issued token."""
        self.forget()

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change some of the :class:`Up42Auth` settings; raises ``ValidationError``."""
        self.tokens.config = Up42Auth.model_validate({**self.auth.model_dump(), **settings})
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return self.auth.model_dump()

    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The platform's routes, counted and fault-injectable, relative to ``prefix``."""
        route = route_maker(NAME, faults, stats, v1_error)
        return [*up42_routes.build(self, route), *up42_stac.build(self, route)]
