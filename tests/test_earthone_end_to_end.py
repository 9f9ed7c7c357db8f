"""EarthOne end to end: registration by Celery message, real beat and worker processes, the
EarthOne simulator on loopback (JWTs from IAM that expire within a watch, compute jobs and
functions, catalog blobs behind signed URLs), a file archive. Assertions are on what a user
sees: the watch's state and history, the archived files, the requests the platform served."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.earthone import EarthOneConfig
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden, wait_for

P = "earthone"
JOB = "compute/v1/jobs/{job_id}"
JOBS = "compute/v1/jobs"
FUNCTION = "compute/v1/functions/{function_id}"
WORKER_PROCESSES = 4  # two poll and two archive worker children, each with its own token
TOKEN_TTL = 6.0  # short-lived JWTs, so that watches here outlive a token
CONFIG = EarthOneConfig(token_ttl=TOKEN_TTL).model_dump()


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer) -> Iterator[Warden]:
    """A warden whose EarthOne provider buys 6-second JWTs from the session simulator."""
    sim.earthone.configure(CONFIG)
    with running_warden(tmp_path_factory.mktemp(P), sim, **sim.earthone.env(sim.url)) as w:
        yield w
    sim.earthone.configure(EarthOneConfig().model_dump())


@pytest.fixture
def tokens(warden: Warden) -> Iterator[dict[str, int]]:
    """The IAM counters at the start of the test; the config restored after it."""
    yield dict(warden.sim.earthone.counters)
    warden.sim.earthone.configure(CONFIG)


def since(w: Warden, before: dict[str, int], counter: str) -> int:
    return w.sim.earthone.counters.get(counter, 0) - before.get(counter, 0)


def track(w: Warden, remote_id: str, **fields: object) -> str:
    w.send_track(provider=P, remote_id=remote_id, **fields)
    return watch_id(P, remote_id)


def folder(w: Warden, remote_id: str) -> Path:
    assert w.archive_dir is not None
    return w.archive_dir / P / remote_id


def gets(w: Warden, route: str, task: str) -> int:
    return w.sim.stats.count(platform=P, route=route, task=task, method="GET")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_job_succeeds_and_its_document_result_and_log_are_archived(
    warden: Warden, tokens: dict[str, int]
) -> None:
    """pending → running → success: job.json, the result blob (sha256 in the manifest) and
    log.txt are archived; one job GET per check (plus the archive's)."""
    job = warden.sim.earthone.add_job(pending_seconds=0.5, running_seconds=1.5, file_size=300_000)
    wid = track(warden, f"job:{job.job_id}")
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.SUCCEEDED, "success")
    transitions = [(h["from"], h["to"]) for h in warden.store.history(wid)]
    assert transitions == [
        (None, "pending"), ("pending", "running"), ("running", "archiving"), ("archiving", "succeeded")
    ]  # fmt: skip
    where = folder(warden, f"job:{job.job_id}")
    manifest = json.loads((where / "manifest.json").read_text())
    by_name = {o["name"]: o for o in manifest["outputs"]}
    assert list(by_name) == ["job.json", "result", "log.txt"]
    assert sha256(where / "result") == by_name["result"]["sha256"] == job.result_sha256
    assert json.loads((where / "job.json").read_text())["status"] == "success"
    assert "result stored: 300000 bytes" in (where / "log.txt").read_text()
    assert gets(warden, JOB, job.job_id) == watch.polls + 1
    assert since(warden, tokens, "unauthorized") == 0


def test_a_failed_job_ends_failed_with_its_reason(warden: Warden) -> None:
    """failure ends `failed` with error_reason and exit code in last_error; nothing archived
    (the default archive mode keeps successes only)."""
    job = warden.sim.earthone.add_job(running_seconds=0.5, outcome="failure",
                                      error_reason="RuntimeError: band 4 missing", exit_code=2)  # fmt: skip
    watch = warden.wait_final(track(warden, f"job:{job.job_id}"))
    assert (watch.state, watch.raw_status) == (State.FAILED, "failure")
    assert watch.last_error is not None
    assert watch.last_error.startswith("job failed: RuntimeError: band 4 missing; exit_code 2")
    assert not folder(warden, f"job:{job.job_id}").exists()


def test_a_failed_final_job_archives_its_document_and_traceback(warden: Warden) -> None:
    """With archive "final", a failed job goes running → archiving → failed: job.json (its
    error_reason, exit code) and log.txt with the traceback are archived, the manifest says
    `failed`, the watch keeps the platform's times and facts, and one final event is written
    (what webhooks are sent from)."""
    job = warden.sim.earthone.add_job(running_seconds=0.5, outcome="failure",
                                      error_reason="KeyError: 'b04'", exit_code=3)  # fmt: skip
    remote = f"job:{job.job_id}"
    wid = track(warden, remote, archive="final")
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status, watch.outcome) == (State.FAILED, "failure", State.FAILED)
    assert watch.last_error is not None and watch.last_error.startswith("job failed: KeyError")
    transitions = [(h["from"], h["to"]) for h in warden.store.history(wid)]
    assert transitions[-2:] == [("running", "archiving"), ("archiving", "failed")]
    where = folder(warden, remote)
    manifest = json.loads((where / "manifest.json").read_text())
    assert (manifest["final_state"], manifest["final_status"]) == ("failed", "failure")
    assert [o["name"] for o in manifest["outputs"]] == ["job.json", "log.txt"]
    document = json.loads((where / "job.json").read_text())
    assert (document["error_reason"], document["exit_code"]) == ("KeyError: 'b04'", 3)
    log = (where / "log.txt").read_text()
    assert "Traceback (most recent call last):" in log and "KeyError: 'b04'" in log
    assert watch.manifest == f"{P}/{remote}/manifest.json"
    assert watch.details is not None and watch.details["exit_code"] == 3
    assert watch.remote_created_at is not None and watch.remote_ended_at is not None
    assert watch.remote_created_at <= watch.remote_ended_at
    finals = [f for _, f in warden.store.events(count=10_000)
              if f["watch_id"] == wid and f["to"] in ("succeeded", "failed")]  # fmt: skip
    assert [(f["from"], f["to"]) for f in finals] == [("archiving", "failed")]


def test_a_timed_out_final_job_leaves_a_snapshot_of_its_document_and_log(warden: Warden) -> None:
    """A job still running at the watch's deadline, archive "final": the watch ends timed_out
    after archiving the job's document and log so far under timed_out/<deadline>/, with a
    `timed_out` manifest; the task's own folder stays free for a re-armed watch."""
    job = warden.sim.earthone.add_job(pending_seconds=0, outcome="never")
    remote = f"job:{job.job_id}"
    wid = track(warden, remote, archive="final", timeout=1.5)
    watch = warden.wait_final(wid)
    assert (watch.state, watch.outcome) == (State.TIMED_OUT, State.TIMED_OUT)
    assert watch.manifest is not None and watch.deadline is not None
    snapshot = warden.archive_dir / watch.manifest  # type: ignore[operator]
    assert snapshot.parent.parent == folder(warden, remote) / "timed_out"
    manifest = json.loads(snapshot.read_text())
    assert (manifest["final_state"], manifest["final_status"]) == ("timed_out", "running")
    assert [o["name"] for o in manifest["outputs"]] == ["job.json", "log.txt"]
    assert json.loads((snapshot.parent / "job.json").read_text())["status"] == "running"
    assert not (folder(warden, remote) / "manifest.json").exists()
    assert [h["to"] for h in warden.store.history(wid)][-2:] == ["archiving", "timed_out"]


def test_a_platform_timeout_is_failed_and_the_history_says_whose(warden: Warden) -> None:
    """status `timeout` ends `failed` (not `timed_out`), and the note says it was the
    platform's limit, not the watch's."""
    job = warden.sim.earthone.add_job(running_seconds=0.5, outcome="failure",
                                      failure_status="timeout")  # fmt: skip
    wid = track(warden, f"job:{job.job_id}")
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.FAILED, "timeout")
    notes = [h.get("note") or "" for h in warden.store.history(wid)]
    assert any(n.startswith("remote timeout: the platform timed the job out") for n in notes)
    assert any("not this watch's timeout" in n for n in notes)


def test_cancel_abort_cancels_the_job_on_the_platform(warden: Warden) -> None:
    """`taskwarden cancel --abort` ends the watch and posts jobs/{id}/cancel: the job goes
    cancel → canceling → canceled on the platform."""
    job = warden.sim.earthone.add_job(outcome="never", cancel_seconds=0.5)
    wid = track(warden, f"job:{job.job_id}")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    out = warden.cli("cancel", wid, "--abort")
    assert out.returncode == 0, out.stderr
    watch = warden.store.get(wid)
    assert watch is not None and watch.state is State.CANCELLED
    posts = warden.sim.stats.count(platform=P, method="POST", task=job.job_id)
    assert posts == 1
    wait_for(lambda: job.status(warden.sim.clock.now()) == "canceled")


def test_a_job_canceled_on_the_platform_ends_cancelled(warden: Warden) -> None:
    """A job someone else cancels ends the watch `cancelled` once the platform says canceled
    (cancel and canceling are still running)."""
    job = warden.sim.earthone.add_job(running_seconds=3600, cancel_seconds=4)
    wid = track(warden, f"job:{job.job_id}")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    job.cancel(warden.sim.clock.now())
    steps = {"cancel", "canceling"}
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.raw_status in steps)
    still = warden.store.get(wid)
    assert still is not None and still.state is State.RUNNING
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.CANCELLED, "canceled")


def test_a_function_of_500_jobs_costs_a_request_or_two_per_check(warden: Warden) -> None:
    """A 500-job function is followed by its job statistics (progress rising), at most two
    requests per check, then archived with a folder per job read from the paged search."""
    script = {"pending_seconds": 0.5, "running_seconds": 1, "file_size": 64}
    function = warden.sim.earthone.add_function(jobs=500, failures=5, stagger=0.008, job=script)
    remote = f"function:{function.function_id}"
    before = warden.sim.stats.count(platform=P, route=JOBS, method="GET")
    watch, progress = warden.follow(track(warden, remote), timeout=60)
    assert (watch.state, watch.raw_status) == (State.SUCCEEDED, "ready")
    assert any(0 < p < 1 for p in progress)  # seen part done on the way
    function_gets = gets(warden, FUNCTION, function.function_id)
    listings = warden.sim.stats.count(platform=P, route=JOBS, method="GET") - before
    archive_gets = 1 + 5  # the function document, then 5 pages of 100 jobs
    per_check = (function_gets + listings - archive_gets) / watch.polls
    print(f"\n500-job function: {watch.polls} checks, {function_gets - 1} function GETs and"
          f" {listings - 5} counts for them: {per_check:.2f} requests per check")  # fmt: skip
    assert function_gets == watch.polls + 1
    assert per_check <= 2
    where = folder(warden, remote)
    manifest = json.loads((where / "manifest.json").read_text())
    names = {o["name"] for o in manifest["outputs"]}
    assert len(names) == 2 + 495 * 3 + 5 * 2
    last = function.jobs[-1]
    assert {f"{last}/job.json", f"{last}/log.txt"} <= names and f"{last}/result" not in names
    first = function.jobs[0]
    assert sha256(where / f"{first}/result") == warden.sim.earthone.jobs[first].result_sha256
    summary = json.loads((where / "jobs.json").read_text())["jobs"]
    assert sum(row["status"] == "failure" for row in summary) == 5


def test_a_token_that_expires_mid_watch_is_renewed_ahead(
    warden: Warden, tokens: dict[str, int]
) -> None:
    """A job running twice a token's life is watched to the end: tokens are renewed from their
    exp claim ahead of time, so no request meets a 401."""
    job = warden.sim.earthone.add_job(running_seconds=2 * TOKEN_TTL)
    watch = warden.wait_final(track(warden, f"job:{job.job_id}"), timeout=60)
    assert watch.state is State.SUCCEEDED
    assert since(warden, tokens, "issued") >= 2  # renewed while the job ran
    assert since(warden, tokens, "unauthorized") == 0


def test_a_revoked_token_mid_watch_costs_at_most_one_401_per_process(
    warden: Warden, tokens: dict[str, int]
) -> None:
    """Tokens revoked while a job runs: each process sees at most one 401, buys a new token
    and goes on, inside the same check."""
    job = warden.sim.earthone.add_job(running_seconds=3)
    wid = track(warden, f"job:{job.job_id}")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    warden.sim.earthone.iam.revoke()
    watch = warden.wait_final(wid)
    assert (watch.state, watch.last_error) == (State.SUCCEEDED, None)
    refused = since(warden, tokens, "unauthorized")
    assert refused <= WORKER_PROCESSES
    assert since(warden, tokens, "issued") >= max(1, refused)


def test_an_unknown_job_ends_in_error_after_one_request(warden: Warden) -> None:
    """A job id the platform does not know is `error` at its first check, not a forever wait."""
    watch = warden.wait_final(track(warden, "job:never-was"))
    assert watch.state is State.ERROR
    assert watch.last_error is not None and "job never-was not found" in watch.last_error
    time.sleep(0.5)
    assert gets(warden, JOB, "never-was") == 1


def test_a_malformed_remote_id_is_refused_without_asking_the_platform(warden: Warden) -> None:
    """A remote id that names no job or function is dead-lettered saying why."""
    wid = track(warden, "task:abc123")
    letter = warden.dead_letter("task:abc123")
    assert "remote_id must be job:<id> or function:<id>" in letter["reason"]
    assert warden.store.get(wid) is None


def test_credentials_withdrawn_mid_watch_end_it_in_error_without_the_secret(
    warden: Warden, tokens: dict[str, int]
) -> None:
    """Tokens revoked and the refresh token no longer accepted: the watch ends in `error`
    saying the refresh token was refused (IAM's words), never quoting it, after a handful of
    token requests rather than a retry storm."""
    job = warden.sim.earthone.add_job(outcome="never")
    wid = track(warden, f"job:{job.job_id}")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    warden.sim.earthone.configure({"clients": {"sim-client": "rotated"}})
    warden.sim.earthone.iam.revoke()
    watch = warden.wait_final(wid)
    assert watch.state is State.ERROR
    assert watch.last_error is not None
    assert "refresh token refused" in watch.last_error and "invalid_grant" in watch.last_error
    assert "sim-refresh-token" not in json.dumps(warden.store.history(wid))
    assert since(warden, tokens, "refused") <= WORKER_PROCESSES
