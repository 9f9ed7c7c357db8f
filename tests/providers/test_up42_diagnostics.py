"""What a UP42 job that did not succeed leaves behind (``list_diagnostics``), and the
platform's timestamps and small facts on each observation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.up42 import adapter as up42
from taskwarden.simulator.server import SimulatorServer

from .up42_kit import call, job_target, read_all, reset, task_target

LONG_LOG = "\n".join(f"step {i}: resampling band B{i % 12:02d} of scene S2A" for i in range(600))


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    return reset(server)


def diagnostics(sim: SimulatorServer, target: Target) -> dict[str, bytes]:
    async def run(provider: up42.Up42Provider) -> dict[str, bytes]:
        refs: Sequence[OutputRef] = await provider.list_diagnostics(target)
        return await read_all(provider, target, refs)

    return call(sim, run)


def status(sim: SimulatorServer, target: Target) -> Observation:
    return call(sim, lambda p: p.fetch_status(target))


def epoch(text: Any) -> float:
    return datetime.fromisoformat(str(text)).astimezone(UTC).timestamp()


def test_a_failed_job_leaves_its_documents_credits_and_every_log_whole(
    sim: SimulatorServer,
) -> None:
    """job.json, tasks.json, credits.json and each task's log in full (the SDK printed them
    all), not a 300-character tail."""
    job = sim.up42.add_job(outcome="failure", credits=77, failure_log=LONG_LOG,
                           tasks=[{"block": "data"}, {"block": "ndvi"}])  # fmt: skip
    got = diagnostics(sim, job_target(job))
    first, last = job.tasks
    assert list(got) == ["job.json", "tasks.json", "credits.json",
                         f"task-{first.id}.log", f"task-{last.id}.log"]  # fmt: skip
    now = sim.clock.now()
    assert got[f"task-{last.id}.log"].decode() == last.log(now)
    assert len(got[f"task-{last.id}.log"]) > 20_000
    assert got[f"task-{first.id}.log"].decode() == first.log(now)
    assert json.loads(got["job.json"])["data"]["status"] == "FAILED"
    assert json.loads(got["credits.json"])["data"]["creditsUsed"] == 77
    assert [t["status"] for t in json.loads(got["tasks.json"])["data"]] == ["SUCCEEDED", "FAILED"]


def test_a_cancelled_job_task_leaves_its_element_job_and_log(sim: SimulatorServer) -> None:
    """A job task's diagnostics: task.json (its element of tasks/), job.json, task.log."""
    job = sim.up42.add_job(outcome="aborted", cancelling_seconds=0, running_seconds=10)
    sim.clock.advance(20)
    got = diagnostics(sim, task_target(job))
    assert list(got) == ["task.json", "job.json", "task.log"]
    assert json.loads(got["task.json"])["status"] == "CANCELLED"
    assert got["task.log"].decode() == job.tasks[0].log(sim.clock.now())


def test_a_failed_processing_job_leaves_its_document_with_the_errors(
    sim: SimulatorServer,
) -> None:
    """v2: job.json with status and results.errors (4.3's Job.errors); there are no v2 logs."""
    job = sim.up42.add_processing(
        outcome="failed", release_seconds=3600,
        errors=[{"name": "BandError", "message": "band 4 missing"}],
    )  # fmt: skip
    got = diagnostics(sim, Target(job.id))
    assert list(got) == ["job.json"]
    document = json.loads(got["job.json"])
    assert document["results"]["errors"] == [{"name": "BandError", "message": "band 4 missing"}]


def test_v1_observations_carry_the_platforms_timestamps_and_facts(sim: SimulatorServer) -> None:
    """createdAt/startedAt/finishedAt of a job (startedAt/finishedAt of a task) as unix seconds;
    a failed job names its failed task, a task its block."""
    job = sim.up42.add_job(outcome="failure", pending_seconds=2, running_seconds=4,
                           tasks=[{"block": "data"}, {"block": "ndvi"}])  # fmt: skip
    sim.clock.advance(10)
    now = sim.clock.now()
    document = job.document(now)
    seen = status(sim, job_target(job))
    assert (seen.remote_created_at, seen.remote_started_at, seen.remote_ended_at) == pytest.approx(
        (epoch(document["createdAt"]), epoch(document["startedAt"]), epoch(document["finishedAt"]))
    )
    assert seen.details == {"tasks": 2, "failed_task": job.tasks[1].id}
    task = status(sim, task_target(job, 1))
    element = job.tasks[1].document(now)
    assert (task.remote_started_at, task.remote_ended_at) == pytest.approx(
        (epoch(element["startedAt"]), epoch(element["finishedAt"]))
    )
    assert task.remote_created_at is None
    assert task.details == {"block": "ndvi", "block_version": "1.0.0"}


@pytest.mark.parametrize(
    ("script", "details"),
    [
        ({"settle_seconds": None}, {"credits": 100}),
        ({"outcome": "failed", "release_seconds": 3600, "credits": 5,
          "errors": [{"name": "BandError", "message": "m"}]},
         {"credits": 5, "errors": ["BandError"]}),
        ({"running_seconds": 100}, None),
    ],
)  # fmt: skip
def test_v2_observations_carry_timestamps_and_credits(
    sim: SimulatorServer, script: dict[str, Any], details: dict[str, Any] | None
) -> None:
    """created/started/finished as unix seconds; credits and error names as details."""
    job = sim.up42.add_processing(**script)
    seen = status(sim, Target(job.id))
    document = job.document(sim.clock.now(), "")
    assert seen.remote_created_at == pytest.approx(epoch(document["created"]))
    if document["finished"] is not None:
        assert seen.remote_ended_at == pytest.approx(epoch(document["finished"]))
    else:
        assert seen.remote is Remote.RUNNING and seen.remote_ended_at is None
    assert seen.details == details
