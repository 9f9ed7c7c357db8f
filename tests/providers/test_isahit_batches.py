"""The isahit adapter against the simulator on what issue #10 found: a batch that is final only
once it has settled (or holds ``expected_tasks``), tasks added while it settles, the SDK's
``lastAnnotator``, and the platform's times, facts and documents on each observation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskwarden.errors import RequestRejected
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import Target
from taskwarden.providers.isahit import adapter as isahit
from taskwarden.providers.isahit.params import request_fields, watched
from taskwarden.providers.timestamps import epoch_seconds
from taskwarden.simulator.server import SimulatorServer

from .test_isahit import archive, batch_target, call, lab, status, task_target

__all__ = ["lab"]  # the fixture, shared with the adapter's main test module


def checks(
    lab: SimulatorServer, target: Target, steps: list[tuple[float, Any]], **fields: Any
) -> list[Observation]:
    """One check after each step: ``(seconds the adapter's clock moves, then a callable)``."""
    now = [0.0]

    async def run(provider: isahit.IsahitProvider) -> list[Observation]:
        provider.clock = lambda: now[0]
        seen = []
        for elapsed, before in steps:
            now[0] += elapsed
            if before is not None:
                before()
            seen.append(await provider.fetch_status(target))
        return seen

    return call(lab, run, **fields)


def test_a_batch_all_final_settles_before_it_ends(lab: SimulatorServer) -> None:
    """All final is `running, settling` until it has stayed so for batch_settle_seconds."""
    batch = lab.isahit.add_batch(3)
    seen = checks(lab, batch_target(batch.batch_id), [(0, None), (59, None), (1, None)],
                  batch_settle_seconds=60)  # fmt: skip
    assert [(o.remote, o.raw_status) for o in seen] == [
        (Remote.RUNNING, "3/3 final, settling"),
        (Remote.RUNNING, "3/3 final, settling"),
        (Remote.SUCCEEDED, "3/3 final"),
    ]
    assert seen[1].details == {"tasks": 3, "final": 3, "settling_for": 59.0}
    assert seen[0].message is not None and "expected_tasks" in seen[0].message


def test_a_task_added_while_settling_starts_the_wait_again(lab: SimulatorServer) -> None:
    """The SDK adds tasks one at a time: a new one resets the settle, and is archived."""
    batch = lab.isahit.add_batch(2)

    def one_more() -> None:
        lab.isahit.add_task(batch_id=batch.batch_id, name="late.jpg")

    target = batch_target(batch.batch_id, settle_seconds=30)
    seen = checks(lab, target, [(0, None), (20, one_more), (20, None), (10, None)])
    assert [(o.remote, o.raw_status) for o in seen] == [
        (Remote.RUNNING, "2/2 final, settling"),
        (Remote.RUNNING, "3/3 final, settling"),  # the late task is final at once: re-settle
        (Remote.RUNNING, "3/3 final, settling"),
        (Remote.SUCCEEDED, "3/3 final"),
    ]
    got = archive(lab, target)
    assert json.loads(got["batch.json"])["tasks_total"] == 3
    assert any(json.loads(body).get("name") == "late.jpg" for body in got.values())


def test_a_task_not_final_yet_interrupts_the_settle(lab: SimulatorServer) -> None:
    """A new task still pending puts the batch back to running; the wait restarts after."""
    batch = lab.isahit.add_batch(1)
    target = batch_target(batch.batch_id, settle_seconds=10)

    def slow() -> None:
        lab.isahit.add_task(batch_id=batch.batch_id, running_seconds=100)

    seen = checks(
        lab,
        target,
        [(0, None), (5, slow), (20, lambda: lab.clock.advance(101)), (5, None), (5, None)],
    )
    assert [o.raw_status for o in seen] == [
        "1/1 final, settling", "1/2 final", "2/2 final, settling", "2/2 final, settling",
        "2/2 final",
    ]  # fmt: skip


def test_expected_tasks_ends_the_batch_without_settling(lab: SimulatorServer) -> None:
    """params.expected_tasks: all final with that many tasks ends it at the first check."""
    batch = lab.isahit.add_batch(4)
    short = checks(lab, batch_target(batch.batch_id, expected_tasks=5), [(0, None)])
    assert short[0].raw_status == "4/4 final, settling"  # fewer than expected: settles
    seen = status(lab, batch_target(batch.batch_id, expected_tasks="4"))
    assert (seen.remote, seen.raw_status) == (Remote.SUCCEEDED, "4/4 final")


def test_a_finished_batch_carries_the_batch_documents_times(lab: SimulatorServer) -> None:
    """The batch's createdAt and updatedAt become the remote times of its success."""
    batch = lab.isahit.add_batch(2, running_seconds=5)
    lab.clock.advance(6)
    seen = status(lab, batch_target(batch.batch_id, settle_seconds=0))
    document = lab.isahit.creation.batch_document(batch.batch_id)
    assert seen.remote_created_at == epoch_seconds(document["createdAt"])
    assert seen.remote_ended_at == epoch_seconds(document["updatedAt"])


@pytest.mark.parametrize(
    "params",
    [
        {"expected_tasks": 0},
        {"expected_tasks": 2.5},
        {"expected_tasks": "many"},
        {"settle_seconds": -1},
        {"kind": "task", "settle_seconds": 5},
        {"kind": "task", "expected_tasks": 3},
    ],
)
def test_bad_batch_params_are_refused(params: dict[str, Any]) -> None:
    """expected_tasks is a whole number >= 1, settle_seconds >= 0, both for batches only."""
    fields = {"project_id": "p", "kind": "batch", **params}
    with pytest.raises(RequestRejected, match="for kind batch only"):
        watched(Target("b", fields))


# --- lastAnnotator and the documents ----------------------------------------------------------


def test_last_annotator_is_derived_from_jobs_as_the_sdk_does(lab: SimulatorServer) -> None:
    """optional_fields lastAnnotator asks the list for jobs (never lastAnnotator itself) and
    archives the latest complete job's completedBy.email, without jobs unless asked."""
    task = lab.isahit.add_task(final_status="reviewed")
    got = json.loads(
        archive(lab, task_target(task.task_id, optional_fields=["lastAnnotator"]))["task.json"]
    )
    jobs = lab.isahit.document(task.task_id, ["jobs"])["jobs"]
    latest = max(jobs, key=lambda job: job["state"]["completedAt"])
    assert got["lastAnnotator"] == latest["state"]["completedBy"]["email"]
    assert "jobs" not in got
    both = json.loads(
        archive(lab, task_target(task.task_id, optional_fields="jobs,lastAnnotator"))["task.json"]
    )
    assert both["jobs"] == jobs and both["lastAnnotator"] == got["lastAnnotator"]
    assert request_fields(["lastAnnotator"]) == ("jobs",)
    assert request_fields(["data", "lastAnnotator", "jobs"]) == ("data", "jobs")


def test_a_task_observation_carries_its_times_and_score(lab: SimulatorServer) -> None:
    """createdAt, and updatedAt once final, become remote times; the review score a detail."""
    task = lab.isahit.add_task(running_seconds=3)
    lab.clock.advance(4)
    seen = status(lab, task_target(task.task_id))
    doc = lab.isahit.document(task.task_id)
    assert seen.remote_created_at == epoch_seconds(doc["createdAt"])
    assert seen.remote_ended_at == epoch_seconds(doc["updatedAt"])
    assert seen.details == {"score": doc["properties"]["score"]}


def test_a_timed_out_task_leaves_its_document(lab: SimulatorServer) -> None:
    """list_diagnostics: the task's document as it stands (isahit tasks never fail)."""
    task = lab.isahit.add_task(outcome="never")
    refs = call(lab, lambda p: p.list_diagnostics(task_target(task.task_id)))
    assert [r.name for r in refs] == ["task.json"]
    assert json.loads(refs[0].content or b"")["status"] == "to-review"
