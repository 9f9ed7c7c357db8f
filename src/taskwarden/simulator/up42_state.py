"""What the UP42 simulator holds and how tests script it: v1 jobs and their tasks, v2 processing
jobs and their result assets, the token service and the URL signer. The HTTP handlers
(:mod:`.up42_routes`, :mod:`.up42_stac`) read and change this state;
:class:`~taskwarden.simulator.up42.Up42Simulator` adds the control API on top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from taskwarden.simulator.up42_auth import Up42Auth, Up42Tokens
from taskwarden.simulator.up42_http import Signer
from taskwarden.simulator.up42_jobs import Up42Job, Up42JobSpec, Up42Task
from taskwarden.simulator.up42_processing import Asset, Up42Processing, Up42ProcessingSpec

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock


class Up42World:
    """UP42's state: v1 jobs (and their tasks), v2 processing jobs (and their assets), tokens."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.jobs: dict[str, Up42Job] = {}
        self.tasks: dict[str, Up42Task] = {}
        self.processing: dict[str, Up42Processing] = {}
        self.assets: dict[str, Asset] = {}
        self.tokens = Up42Tokens(clock)
        self.signer = Signer()

    # -- auth, as tests read it ---------------------------------------------------------
    @property
    def auth(self) -> Up42Auth:
        return self.tokens.config

    @property
    def rejected(self) -> int:
        """API requests refused for an unknown or expired token."""
        return self.tokens.rejected

    @property
    def token_grants(self) -> int:
        """Tokens issued, by either token endpoint."""
        return self.tokens.grants

    def revoke_tokens(self) -> None:
        """Expire every issued token now (the next call with one is a 401)."""
        self.tokens.revoke()

    # -- scripting ------------------------------------------------------------------------
    def add_job(self, spec: Up42JobSpec | None = None, **fields: Any) -> Up42Job:
        """Add a v1 job (and its tasks) from a spec or its fields; its clock starts now."""
        return self.add_jobs([spec if spec is not None else Up42JobSpec(**fields)])[0]

    def add_jobs(self, specs: Iterable[Up42JobSpec | Mapping[str, Any]]) -> list[Up42Job]:
        items = [s if isinstance(s, Up42JobSpec) else Up42JobSpec(**s) for s in specs]
        now = self.clock.now()
        added = [Up42Job(spec, now, self.clock.epoch(now)) for spec in items]
        for job in added:
            self.jobs[job.id] = job
            self.tasks.update((task.id, task) for task in job.tasks)
        return added

    def add_processing(
        self, spec: Up42ProcessingSpec | None = None, **fields: Any
    ) -> Up42Processing:
        """Add a v2 processing job from a spec or its fields; its clock starts now."""
        spec = spec if spec is not None else Up42ProcessingSpec(**fields)
        taken = [a.id for i in spec.items for a in i.assets if a.id in self.assets]
        if taken:
            raise ValueError(f"asset ids already in use: {taken}")
        now = self.clock.now()
        job = Up42Processing(spec, now, self.clock.epoch(now))
        self.processing[job.id] = job
        self.assets.update((asset.spec.id, asset) for asset in job.assets)
        return job

    def status(self, job_id: str) -> str:
        """The status word a v1 job, job task or processing job shows now."""
        now = self.clock.now()
        if job_id in self.jobs:
            return self.jobs[job_id].word(now)
        if job_id in self.tasks:
            task = self.tasks[job_id]
            return task.job.task_word(task.index, now)
        return self.processing[job_id].word(now)

    def cancel(self, job_id: str) -> bool:
        """Cancel a v1 job that has not finished; False when it had."""
        return self.jobs[job_id].abort(self.clock.now())

    def collection_job(self, collection_id: str) -> Up42Processing | None:
        """The processing job whose delivered results are ``collection_id``."""
        now = self.clock.now()
        for job in list(self.processing.values()):
            if job.spec.collection_id == collection_id and job.delivered(now):
                return job
        return None

    def forget(self) -> None:
        """Forget every job and issued token."""
        self.jobs, self.tasks, self.processing, self.assets = {}, {}, {}, {}
        self.tokens.clear()
