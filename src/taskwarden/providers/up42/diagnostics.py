"""What a UP42 job that did not succeed leaves behind, as an SDK user reads it on failure.

    v1 job          job.json and tasks.json (the responses as served), credits.json
                    (``…/credits``, 0.34.1 ``Job.get_credits``), and ``task-<id>.log`` for every
                    task, whole: 0.34.1 ``track_status`` prints every task's log on FAILED/ERROR
                    (``Job.get_logs``, ``job.py:255-288``)
    v1 job task     task.json (its element of ``tasks/``), job.json, task.log (whole)
    v2 processing   job.json, with ``status`` and ``results.errors`` (4.3's ``Job.errors``; 4.3
                    has no v2 logs), and collection.json when the failed job names a collection

Logs, credits and the collection are optional: a 404 leaves them out. Documents up to
:data:`~taskwarden.providers.up42.outputs.INLINE_LIMIT` are read at listing time; a larger log
is streamed when archived.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from taskwarden import net
from taskwarden.errors import RequestRejected
from taskwarden.providers.base import OutputRef
from taskwarden.providers.up42.api import NAME, Up42Api, v1_data
from taskwarden.providers.up42.outputs import JSON, TEXT, Outputs, collection_url

STAC = "v2/assets/stac"


class Diagnostics:
    """Lists the diagnostics of UP42 jobs, job tasks and processing jobs."""

    def __init__(self, api: Up42Api, outputs: Outputs) -> None:
        self._api = api
        self._outputs = outputs

    async def v1_job(self, job_path: str, job_id: str) -> list[OutputRef]:
        what = f"up42 job {job_id}"
        job = await self._api.request("GET", self._api.url(job_path), what=what)
        listed = await self._api.request("GET", self._api.url(f"{job_path}/tasks/"), what=what)
        refs = [
            _inline("job.json", job.content, job_path),
            _inline("tasks.json", listed.content, f"{job_path}/tasks/"),
        ]
        try:
            credits = await self._outputs.optional(
                self._api.url(f"{job_path}/credits"), "credits.json", JSON, what
            )
        except RequestRejected:
            credits = None  # a platform without the endpoint (405, 400): nothing to keep
        refs += [credits] if credits is not None else []
        tasks = v1_data(listed)
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, dict) and isinstance(task.get("id"), str):
                task_path = f"{job_path}/tasks/{quote(task['id'], safe='')}"
                refs += await self._log(task_path, f"task-{task['id']}.log", what)
        return refs

    async def v1_task(self, job_path: str, task: dict[str, Any]) -> list[OutputRef]:
        what = f"up42 job task {task.get('id')}"
        task_path = f"{job_path}/tasks/{quote(str(task.get('id')), safe='')}"
        job = await self._api.request("GET", self._api.url(job_path), what=what)
        body = json.dumps(task, indent=2, sort_keys=True).encode()
        refs = [_inline("task.json", body, task_path), _inline("job.json", job.content, job_path)]
        return refs + await self._log(task_path, "task.log", what)

    async def processing(self, job_id: str) -> list[OutputRef]:
        path = f"v2/processing/jobs/{quote(job_id, safe='')}"
        what = f"up42 processing job {job_id}"
        response = await self._api.request("GET", self._api.url(path), what=what)
        refs = [_inline("job.json", response.content, path)]
        collection = collection_url(net.json_body(response, provider=NAME))
        if collection is not None:
            cid = quote(collection.rstrip("/").split("/")[-1], safe="")
            url = self._api.url(f"{STAC}/collections/{cid}")
            ref = await self._outputs.optional(url, "collection.json", JSON, what)
            refs += [ref] if ref is not None else []
        return refs

    async def _log(self, task_path: str, name: str, what: str) -> list[OutputRef]:
        log = await self._outputs.optional(self._api.url(f"{task_path}/logs"), name, TEXT, what)
        return [] if log is None else [log]


def _inline(name: str, content: bytes, source: str) -> OutputRef:
    return OutputRef(name=name, source=f"{NAME}:{source}", content=content, content_type=JSON)
