"""isahit lab end to end: registrations by Celery message, real beat and worker processes, the
isahit simulator on loopback, task documents in a real archive. Tokens live three seconds here,
so every test also crosses token renewals."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.isahit import IsahitAuth
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden, wait_for

PROJECT = "sim-project"
TASKS = "api/task-manager/tasks"
LOGIN = "api/user-manager/auth/login"
FIELDS = ("data", "jobs", "metrics")
TOKEN_TTL = 3.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer) -> Iterator[Warden]:
    """A warden with isahit credentials, on a session simulator whose tokens last 3 s."""
    env = {
        "TASKWARDEN_PROVIDERS__ISAHIT__BASE_URL": sim.isahit_url,
        "TASKWARDEN_PROVIDERS__ISAHIT__ACCESS_ID": "sim-access-id",
        "TASKWARDEN_PROVIDERS__ISAHIT__SECRET_KEY": "sim-secret-key",
        # a batch all final ends after staying so for 1 s (300 s by default)
        "TASKWARDEN_PROVIDERS__ISAHIT__BATCH_SETTLE_SECONDS": "1",
    }
    sim.isahit.configure({"token_ttl": TOKEN_TTL})
    try:
        with running_warden(tmp_path_factory.mktemp("isahit"), sim, processes=1, **env) as w:
            yield w
    finally:
        sim.isahit.configure(IsahitAuth().model_dump())


def track(w: Warden, remote_id: str, **params: Any) -> str:
    """Register by Celery message; returns the watch id."""
    w.send_track(provider="isahit", remote_id=remote_id, params={"project_id": PROJECT, **params})
    return watch_id("isahit", remote_id)


def folder(w: Warden, remote_id: str) -> Path:
    assert w.archive_dir is not None
    return w.archive_dir / "isahit" / remote_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lists(w: Warden, subject: str) -> int:
    return w.sim.stats.count(platform="isahit", route=TASKS, task=subject)


def notes(w: Warden, wid: str) -> list[str]:
    return [h["note"] or "" for h in w.store.history(wid)]


def auth_counts(w: Warden) -> tuple[int, int]:
    """(logins so far, requests refused with 401 so far) on the isahit simulator."""
    return w.sim.stats.count(platform="isahit", route=LOGIN), w.sim.isahit.refused


def test_a_task_runs_to_complete_and_its_document_is_archived(warden: Warden) -> None:
    """A task goes pending, to-review, complete, and task.json is what the platform served."""
    task = warden.sim.isahit.add_task(name="street.jpg", pending_seconds=0.5, running_seconds=1.5)
    wid = track(warden, task.task_id)
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status, watch.name) == (
        State.SUCCEEDED,
        "complete",
        "street.jpg",
    )
    transitions = [(h["from"], h["to"]) for h in warden.store.history(wid)]
    assert transitions == [
        (None, "pending"), ("pending", "running"), ("running", "archiving"), ("archiving", "succeeded")
    ]  # fmt: skip

    archived = folder(warden, task.task_id) / "task.json"
    assert sha256(archived) == warden.sim.isahit.archive_sha256(task.task_id, FIELDS)
    doc = json.loads(archived.read_text())
    assert {"data", "jobs", "metrics"} <= doc.keys()
    manifest = json.loads((folder(warden, task.task_id) / "manifest.json").read_text())
    assert manifest["final_status"] == "complete"
    assert [o["sha256"] for o in manifest["outputs"]] == [sha256(archived)]
    # one request per check; the archive's read of the full document is the one more
    assert lists(warden, task.task_id) == watch.polls + 1


def test_the_cli_registers_with_params_as_strings(warden: Warden) -> None:
    """`taskwarden track isahit <id> --param …` works, optional_fields as a comma list."""
    task = warden.sim.isahit.add_task(running_seconds=0.5)
    result = warden.cli(
        "track", "isahit", task.task_id, "--param", f"project_id={PROJECT}",
        "--param", "optional_fields=jobs,jobs.history",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    watch = warden.wait_final(watch_id("isahit", task.task_id))
    assert watch.state is State.SUCCEEDED
    doc = json.loads((folder(warden, task.task_id) / "task.json").read_text())
    assert "data" not in doc and "history" in doc["jobs"][0]
    fields = ("jobs", "jobs.history")
    assert sha256(folder(warden, task.task_id) / "task.json") == warden.sim.isahit.archive_sha256(
        task.task_id, fields
    )


def test_the_history_says_a_final_task_may_be_reopened(warden: Warden) -> None:
    """The success note carries the adapter's warning that isahit may reopen the task."""
    task = warden.sim.isahit.add_task()
    watch = warden.wait_final(track(warden, task.task_id))
    assert any("may reopen" in note for note in notes(warden, watch.id))


def test_a_task_reopened_after_its_watch_ended_is_not_watched_again(warden: Warden) -> None:
    """The watch stops at the first final word (reviewed); a later redo changes nothing."""
    task = warden.sim.isahit.add_task(final_status="reviewed", running_seconds=1, reopen_seconds=60)
    watch = warden.wait_final(track(warden, task.task_id))
    assert (watch.state, watch.raw_status) == (State.SUCCEEDED, "reviewed")
    assert warden.sim.isahit.reopen(task.task_id, "pending")
    asked = lists(warden, task.task_id)
    time.sleep(1.5)
    assert warden.sim.isahit.status(task.task_id) == "pending"
    again = warden.store.get(watch.id)
    assert again is not None and (again.state, again.raw_status) == (State.SUCCEEDED, "reviewed")
    assert lists(warden, task.task_id) == asked
    archived = json.loads((folder(warden, task.task_id) / "task.json").read_text())
    assert archived["status"] == "reviewed"


def test_a_batch_is_watched_until_every_task_is_final(warden: Warden) -> None:
    """120 tasks finishing one by one: progress rises, two counts per check, the batch settles
    (1 s here) once all are final, and the archive holds batch.json and every task's document,
    fetched a page at a time."""
    batch = warden.sim.isahit.add_batch(120, running_seconds=1, stagger=0.025)
    wid = track(warden, batch.batch_id, kind="batch")
    watch, seen = warden.follow(wid, timeout=60)
    assert (watch.state, watch.raw_status, watch.progress) == (
        State.SUCCEEDED,
        "120/120 final",
        1.0,
    )
    assert len([p for p in seen if 0 < p < 1]) >= 2, f"progress seen along the way: {seen}"

    where = folder(warden, batch.batch_id)
    summary = json.loads((where / "batch.json").read_text())
    assert (summary["tasks_total"], summary["statuses"], summary["may_reopen"]) == (
        120,
        {"complete": 120},
        True,
    )
    for task in batch.tasks:
        got = sha256(where / f"task-{task.task_id}.json")
        assert got == warden.sim.isahit.archive_sha256(task.task_id, FIELDS)
    manifest = json.loads((where / "manifest.json").read_text())
    assert len(manifest["outputs"]) == 121
    # two counts per check; the archive read 2 light pages and 2 full ones, nothing per task
    assert lists(warden, batch.batch_id) == 2 * watch.polls + 4


def test_a_batch_the_sdk_fills_one_task_at_a_time_ends_when_it_holds_all(
    warden: Warden,
) -> None:
    """The real SDK's create_tasks adds tasks one request at a time: a batch whose first task
    is final keeps settling (not ended at 1/1), and with params.expected_tasks it ends as soon
    as all three are there and final; every task is archived."""
    from isahitlab.client import IsahitLab

    warden.sim.isahit.configure({"api_pending_seconds": 0.2, "api_running_seconds": 0.2})
    lab = IsahitLab(
        endpoint=warden.sim.isahit_url, access_id="sim-access-id", secret_key="sim-secret-key"
    )
    batch = lab.create_batch(PROJECT, "one at a time", disable_progress_bar=True)
    wid = track(warden, batch["_id"], kind="batch", expected_tasks=3, settle_seconds=3600)
    lab.create_tasks(PROJECT, batch["_id"], [{"name": "first.jpg"}], disable_progress_bar=True)
    wait_for(lambda: (w := warden.store.get(wid)) and w.raw_status == "1/1 final, settling")
    more = [{"name": "second.jpg"}, {"name": "third.jpg"}]
    lab.create_tasks(PROJECT, batch["_id"], more, disable_progress_bar=True)
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.SUCCEEDED, "3/3 final")
    summary = json.loads((folder(warden, batch["_id"]) / "batch.json").read_text())
    assert sorted(t["name"] for t in summary["tasks"]) == ["first.jpg", "second.jpg", "third.jpg"]
    assert summary["expected_tasks"] == 3
    assert len(list(folder(warden, batch["_id"]).glob("task-*.json"))) == 3


def test_a_token_expired_mid_watch_costs_one_login_per_refusal(warden: Warden) -> None:
    """A server that drops every token mid-watch is answered by logging in again, not by
    failing: the watch succeeds and each 401 was followed by exactly one login.

    With this module's 3-second tokens the adapter may renew ahead of expiry before its next
    request meets the dropped token (then there is no 401 to answer), so the test first hands
    it a token that would live an hour: only the server's drop can then end it.
    """
    warden.sim.isahit.configure({"token_ttl": 3600})
    try:
        warden.sim.isahit.expire_tokens()  # the poll process's next request logs in: 1 h token
        logins, _ = auth_counts(warden)
        task = warden.sim.isahit.add_task(pending_seconds=0.5, running_seconds=3)
        wid = track(warden, task.task_id)
        wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
        assert auth_counts(warden)[0] > logins  # it holds an hour-long token now
        logins, refused = auth_counts(warden)
        assert warden.sim.isahit.expire_tokens() >= 1
        watch = warden.wait_final(wid)
        assert watch.state is State.SUCCEEDED and watch.last_error is None
        more_logins, more_refused = (
            a - b for a, b in zip(auth_counts(warden), (logins, refused), strict=True)
        )
        # the poll still to come after the drop met it; the archive run may log in once more
        assert more_refused >= 1
        assert more_logins <= more_refused + 1
    finally:
        _back_to_short_tokens(warden)


def _back_to_short_tokens(w: Warden) -> None:
    """Restore 3-second tokens and let the poll process take one (the next test needs it)."""
    w.sim.isahit.configure({"token_ttl": TOKEN_TTL})
    w.sim.isahit.expire_tokens()
    task = w.sim.isahit.add_task(running_seconds=0.2)
    w.wait_final(track(w, task.task_id))


def test_short_lived_tokens_are_renewed_before_they_expire(warden: Warden) -> None:
    """With 3-second tokens a 6-second watch logs in again ahead of expiry and meets no 401."""
    logins, refused = auth_counts(warden)
    task = warden.sim.isahit.add_task(running_seconds=6)
    watch = warden.wait_final(track(warden, task.task_id))
    assert watch.state is State.SUCCEEDED
    now_logins, now_refused = auth_counts(warden)
    assert now_refused == refused
    assert now_logins - logins >= 2


def test_a_task_the_list_does_not_return_ends_in_error_at_once(warden: Warden) -> None:
    """An unknown task id ends in error after a single list request: no hammering."""
    missing = "ffffffffffffffffffffffff"
    watch = warden.wait_final(track(warden, missing))
    assert watch.state is State.ERROR
    assert watch.last_error is not None and "not found" in watch.last_error
    time.sleep(0.5)
    assert lists(warden, missing) == 1


def test_a_registration_without_a_project_is_refused_without_a_request(warden: Warden) -> None:
    """isahit needs the project: without one the registration is refused saying so
    (dead-lettered, no watch), asking nothing."""
    remote = "eeeeeeeeeeeeeeeeeeeeeeee"
    warden.send_track(provider="isahit", remote_id=remote)
    assert "params.project_id" in warden.dead_letter(remote)["reason"]
    assert warden.store.get(watch_id("isahit", remote)) is None
    assert lists(warden, remote) == 0


def test_a_400_ends_in_error_quoting_the_error_code(warden: Warden) -> None:
    """A 400 is permanent: the watch ends in error with the platform's message and errorCode."""
    task = warden.sim.isahit.add_task(outcome="never")
    warden.sim.inject(kind="status", status=400, task=task.task_id, count=1)
    watch = warden.wait_final(track(warden, task.task_id))
    assert watch.state is State.ERROR
    assert watch.last_error is not None and "errorCode 4000" in watch.last_error


def test_rate_limits_and_outages_are_retried(warden: Warden) -> None:
    """A 429 with Retry-After, a 429 without, and a 503 burst delay the watch, nothing more."""
    task = warden.sim.isahit.add_task(running_seconds=1)
    for fault in (
        {"kind": "rate_limit", "retry_after": "1"},
        {"kind": "rate_limit"},
        {"kind": "status", "status": 503, "count": 2},
    ):
        warden.sim.inject(task=task.task_id, route=TASKS, **fault)
    started = time.monotonic()
    watch = warden.wait_final(track(warden, task.task_id))
    assert watch.state is State.SUCCEEDED
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert lists(warden, task.task_id) >= 5


def test_an_unknown_status_word_keeps_polling(warden: Warden) -> None:
    """An unknown word is recorded raw and noted, and the watch still finishes."""
    task = warden.sim.isahit.add_task(running_seconds=2)
    warden.sim.inject(kind="unknown_status", task=task.task_id, word="archived", count=2)
    watch = warden.wait_final(track(warden, task.task_id))
    assert watch.state is State.SUCCEEDED
    assert any("unknown status word 'archived'" in note for note in notes(warden, watch.id))


def test_a_task_nobody_annotates_times_out(warden: Warden) -> None:
    """A task left in to-review past the watch's timeout ends timed_out, and polling stops."""
    task = warden.sim.isahit.add_task(outcome="never")
    warden.send_track(
        provider="isahit", remote_id=task.task_id, params={"project_id": PROJECT}, timeout=1.5
    )
    watch = warden.wait_final(watch_id("isahit", task.task_id))
    assert (watch.state, watch.raw_status) == (State.TIMED_OUT, "to-review")
    count = lists(warden, task.task_id)
    time.sleep(1)
    assert lists(warden, task.task_id) == count


def test_cancelling_is_local_because_isahit_cannot_stop_a_task(warden: Warden) -> None:
    """cancel --abort ends the watch; the abort is refused in its history, and nothing was sent
    to the platform, whose task goes on."""
    task = warden.sim.isahit.add_task(outcome="never")
    wid = track(warden, task.task_id)
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.polls >= 1)
    result = warden.cli("cancel", wid, "--abort")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: any("abort failed" in note for note in notes(warden, wid)))
    watch = warden.store.get(wid)
    assert watch is not None and watch.state is State.CANCELLED
    assert any("no way to stop" in note for note in notes(warden, wid))
    assert warden.sim.stats.count(platform="isahit", method="PATCH", task=task.task_id) == 0
    assert warden.sim.isahit.status(task.task_id) == "to-review"
