"""Descartes Labs end to end: registration by Celery message, real beat and worker processes, the
Descartes Labs simulator on loopback (JWTs from a refresh token, JSON:API jobs, exports that
are 404 until done, storage), a file archive. Assertions are on what a user sees."""

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
from taskwarden.providers.descarteslabs.adapter import NOT_FINISHED
from taskwarden.simulator.descarteslabs import DescartesLabsConfig
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden, wait_for

P = "descarteslabs"
COPY = "vector/v2/products/{product_id}/search/copy/status"
DELETE = "vector/v2/products/{product_id}/search/delete/status"
EXPORT = "vector/v2/products/{product_id}/search/export/{export_id}"
PRODUCT = "vector/v2/products/{product_id}"
WORKER_PROCESSES = 4  # two poll and two archive worker children, each with its own token
TOKEN_TTL = 6.0  # short-lived JWTs, so that watches here outlive a token
CONFIG = DescartesLabsConfig(token_ttl=TOKEN_TTL).model_dump()


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer) -> Iterator[Warden]:
    """A warden whose Descartes Labs provider buys 6-second JWTs from the session simulator."""
    sim.descarteslabs.configure(CONFIG)
    env = sim.descarteslabs.env(sim.url)
    with running_warden(tmp_path_factory.mktemp(P), sim, **env) as w:
        yield w


@pytest.fixture
def tokens(warden: Warden) -> Iterator[dict[str, int]]:
    """The accounts counters at the start of the test; the config restored after it."""
    yield dict(warden.sim.descarteslabs.counters)
    warden.sim.descarteslabs.configure(CONFIG)


def since(w: Warden, before: dict[str, int], counter: str) -> int:
    return w.sim.descarteslabs.counters.get(counter, 0) - before.get(counter, 0)


def track(w: Warden, remote_id: str, **params: Any) -> str:
    w.send_track(provider=P, remote_id=remote_id, params=params)
    return watch_id(P, remote_id)


def track_with_timeout(w: Warden, remote_id: str, timeout: float, **params: Any) -> str:
    w.send_track(provider=P, remote_id=remote_id, params=params, timeout=timeout)
    return watch_id(P, remote_id)


def folder(w: Warden, remote_id: str) -> Path:
    assert w.archive_dir is not None
    return w.archive_dir / P / remote_id


def gets(w: Warden, route: str, task: str) -> int:
    return w.sim.stats.count(platform=P, route=route, task=task, method="GET")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_copy_job_succeeds_and_archives_its_final_status(
    warden: Warden, tokens: dict[str, int]
) -> None:
    """A copy job is followed PENDING → RUNNING → DONE and its final status document archived,
    one status request per poll (plus the archive's); tokens are bought no more than once a
    half-life per process, and never after a 401."""
    started = time.monotonic()
    job = warden.sim.descarteslabs.add_copy_job(pending_seconds=0.5, running_seconds=2)
    wid = track(warden, job.product_id, kind="copy")
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.SUCCEEDED, "DONE")
    assert watch.name == f"copy into {job.product_id}"
    transitions = [(h["from"], h["to"]) for h in warden.store.history(wid)]
    assert transitions == [
        (None, "pending"), ("pending", "running"), ("running", "archiving"), ("archiving", "succeeded")
    ]  # fmt: skip
    archived = json.loads((folder(warden, job.product_id) / "status.json").read_text())
    assert archived["data"]["type"] == "copy_job"
    assert (archived["data"]["attributes"]["state"], archived["data"]["attributes"]["errors"]) == (
        "DONE",
        [],
    )
    manifest = json.loads((folder(warden, job.product_id) / "manifest.json").read_text())
    assert (manifest["final_status"], [o["name"] for o in manifest["outputs"]]) == (
        "DONE",
        ["status.json"],
    )
    assert gets(warden, COPY, job.product_id) == watch.polls + 1
    half_lives = (time.monotonic() - started) / (TOKEN_TTL / 2)
    assert since(warden, tokens, "issued") <= WORKER_PROCESSES * (half_lives + 1)
    assert since(warden, tokens, "unauthorized") == 0


def test_a_delete_job_done_with_errors_fails_with_the_errors(warden: Warden) -> None:
    """State DONE with a non-empty errors list ends `failed`, the errors in last_error, and
    nothing is archived."""
    job = warden.sim.descarteslabs.add_delete_job(
        running_seconds=1, errors=["feature 12: invalid geometry", "feature 40: too large"]
    )
    watch = warden.wait_final(track(warden, job.product_id, kind="delete"))
    assert (watch.state, watch.raw_status) == (State.FAILED, "DONE")
    assert watch.last_error == (
        "delete job reported 2 errors: feature 12: invalid geometry; feature 40: too large"
    )
    assert not folder(warden, job.product_id).exists()


@pytest.mark.parametrize("word", ["FAILED", "FAILURE"])
def test_both_failure_spellings_end_failed(warden: Warden, word: str) -> None:
    """The documented FAILED (on which the SDK waits for ever) and FAILURE both end `failed`."""
    job = warden.sim.descarteslabs.add_copy_job(
        running_seconds=0.5, outcome="failure", failure_word=word
    )
    watch = warden.wait_final(track(warden, job.product_id, kind="copy"))
    assert (watch.state, watch.raw_status) == (State.FAILED, word)
    assert watch.last_error is not None and "no errors listed" in watch.last_error


def test_an_export_runs_through_404s_and_archives_result_geojson_and_log(
    warden: Warden,
) -> None:
    """While the result is 404 the watch runs; on SUCCESS the GeoJSON from storage (key from
    labels[3]), the result and the log are archived with matching checksums."""
    export = warden.sim.descarteslabs.add_export(
        key="exports/buildings.geojson", pending_seconds=0.5, running_seconds=2, features=300
    )
    wid = track(warden, export.export_id, kind="export", product_id=export.product_id)
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.raw_status == NOT_FINISHED)
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.SUCCEEDED, "SUCCESS")
    where = folder(warden, export.export_id)
    assert sha256(where / "export.geojson") == export.sha256
    assert (where / "export.log").read_bytes() == export.log
    result = json.loads((where / "result.json").read_text())
    assert result["data"]["attributes"]["labels"][3] == "exports/buildings.geojson"
    manifest = json.loads((where / "manifest.json").read_text())
    by_name = {o["name"]: o for o in manifest["outputs"]}
    assert by_name["export.geojson"]["sha256"] == export.sha256
    assert by_name["export.geojson"]["size"] == len(export.data)
    # the product is looked up once per process that saw a 404, not once per poll
    assert warden.sim.stats.count(route=PRODUCT, task=export.product_id) <= WORKER_PROCESSES
    assert gets(warden, EXPORT, export.export_id) == watch.polls + 1


def test_a_failed_export_explains_itself(warden: Warden) -> None:
    """FAILURE ends `failed` with exception, failure type, runtime and peak memory in words."""
    export = warden.sim.descarteslabs.add_export(
        outcome="failure",
        running_seconds=0.5,
        exception_name="MemoryError",
        failure_type="executable_failure",
        runtime=31,
        peak_memory_usage=5 * 2**30,
    )
    watch = warden.wait_final(
        track(warden, export.export_id, kind="export", product_id=export.product_id)
    )
    assert (watch.state, watch.raw_status) == (State.FAILED, "FAILURE")
    assert watch.last_error == (
        "export failed: exception MemoryError (failure_type executable_failure: resource limits"
        " reached); runtime 31 s; peak_memory_usage 5368709120 bytes (5120.0 MiB)"
    )


def test_an_export_of_an_unknown_product_ends_in_error_at_once(warden: Warden) -> None:
    """A 404 result whose product is 404 too is `error` after two requests, not a forever wait."""
    wid = track(warden, "export-of-nothing", kind="export", product_id="nobody:nothing")
    watch = warden.wait_final(wid)
    assert watch.state is State.ERROR
    assert watch.last_error is not None and "product nobody:nothing not found" in watch.last_error
    time.sleep(0.5)
    assert gets(warden, EXPORT, "export-of-nothing") == 1
    assert warden.sim.stats.count(route=PRODUCT, task="nobody:nothing") == 1


def test_an_unknown_export_id_ends_at_the_watch_timeout(warden: Warden) -> None:
    """An export id the platform never heard of looks running; the watch's timeout ends it."""
    warden.sim.descarteslabs.add_product("sim:known")
    wid = track_with_timeout(warden, "never-was", 1.5, kind="export", product_id="sim:known")
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.TIMED_OUT, NOT_FINISHED)


def test_an_unknown_export_id_ends_in_error_after_its_grace(warden: Warden) -> None:
    """An export id that stays 404 under a known product ends in `error` once
    params.not_found_after has passed, quoting the platform's 404, well before any timeout."""
    warden.sim.descarteslabs.add_product("sim:known")
    wid = track(warden, "never-existed", kind="export", product_id="sim:known", not_found_after=1)
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.ERROR, NOT_FINISHED)
    assert watch.last_error is not None
    assert "Export not found" in watch.last_error and "not_found_after 1 s" in watch.last_error


def test_a_job_listing_errors_while_running_is_still_running(warden: Warden) -> None:
    """Errors on a RUNNING job do not end the watch (the SDK keeps waiting too): it runs on
    until its timeout, never `failed` (a DONE job with errors fails: the test above)."""
    job = warden.sim.descarteslabs.add_copy_job(
        outcome="never", errors=["feature 5: bad"], errors_while_running=True
    )
    wid = track_with_timeout(warden, job.product_id, 2.0, kind="copy")
    watch = warden.wait_final(wid)
    assert (watch.state, watch.raw_status) == (State.TIMED_OUT, "RUNNING")
    assert watch.polls >= 2
    assert [h["to"] for h in warden.store.history(wid)][-2:] == ["running", "timed_out"]


def test_bad_params_are_refused_without_asking_the_platform(warden: Warden) -> None:
    """A registration without a valid kind is refused saying why (dead-lettered, no watch);
    no request is sent for it."""
    job = warden.sim.descarteslabs.add_copy_job()
    wid = track(warden, job.product_id, kind="move")
    letter = warden.dead_letter(job.product_id)
    assert letter["reason"].endswith(
        "invalid descarteslabs registration: params.kind must be one of copy, delete, export"
        " (got 'move')"
    )
    assert warden.store.get(wid) is None
    assert warden.sim.stats.count(platform=P, task=job.product_id) == 0


def test_tokens_are_refreshed_before_they_expire_mid_watch(
    warden: Warden, tokens: dict[str, int]
) -> None:
    """A job running twice a token's life is watched to the end: tokens are renewed from
    their exp claim ahead of time, so no request meets a 401."""
    job = warden.sim.descarteslabs.add_copy_job(running_seconds=2 * TOKEN_TTL)
    watch = warden.wait_final(track(warden, job.product_id, kind="copy"))
    assert watch.state is State.SUCCEEDED
    assert since(warden, tokens, "issued") >= 2  # renewed while the job ran
    assert since(warden, tokens, "unauthorized") == 0


def test_a_revoked_token_mid_watch_costs_at_most_one_401_per_process(
    warden: Warden, tokens: dict[str, int]
) -> None:
    """Tokens revoked while a job runs: each process sees at most one 401, buys a new token and
    goes on (a process may renew early, before its first 401: the 401 path itself is pinned
    deterministically in tests/providers/test_descarteslabs.py)."""
    job = warden.sim.descarteslabs.add_copy_job(running_seconds=4)
    wid = track(warden, job.product_id, kind="copy")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    warden.sim.descarteslabs.accounts.revoke()
    watch = warden.wait_final(wid)
    assert (watch.state, watch.last_error) == (State.SUCCEEDED, None)  # retried inside a poll
    refused = since(warden, tokens, "unauthorized")
    assert refused <= WORKER_PROCESSES
    assert since(warden, tokens, "issued") >= max(1, refused)


def test_rate_limits_and_5xx_are_retried(warden: Warden) -> None:
    """A 429 with Retry-After and a burst of 503s on the status route delay, not end, a watch."""
    job = warden.sim.descarteslabs.add_copy_job(running_seconds=1)
    warden.sim.inject(kind="rate_limit", retry_after="0.5", route=COPY, task=job.product_id)
    warden.sim.inject(kind="status", status=503, route=COPY, task=job.product_id, count=2)
    watch = warden.wait_final(track(warden, job.product_id, kind="copy"))
    assert watch.state is State.SUCCEEDED
    assert gets(warden, COPY, job.product_id) >= 5
    notes = [h.get("note") or "" for h in warden.store.history(watch.id)]
    assert not any("gave up" in n for n in notes)


def test_an_unknown_state_word_is_noted_and_polling_goes_on(warden: Warden) -> None:
    """A state outside the documented words is recorded raw and the watch still finishes."""
    job = warden.sim.descarteslabs.add_delete_job(running_seconds=2)
    warden.sim.inject(kind="unknown_status", task=job.product_id, route=DELETE, word="QUEUED")
    watch = warden.wait_final(track(warden, job.product_id, kind="delete"))
    assert watch.state is State.SUCCEEDED
    notes = [h.get("note") or "" for h in warden.store.history(watch.id)]
    assert any("unknown status word 'QUEUED'" in n for n in notes)


def test_cancel_stops_the_watch_while_the_platform_job_runs_on(warden: Warden) -> None:
    """The platform cannot cancel jobs: `cancel --abort` ends the watch, polling stops, the
    abort is refused by the adapter and the remote job keeps running."""
    job = warden.sim.descarteslabs.add_copy_job(outcome="never")
    wid = track(warden, job.product_id, kind="copy")
    wait_for(lambda: (w := warden.store.get(wid)) is not None and w.state is State.RUNNING)
    out = warden.cli("cancel", wid, "--abort")
    assert out.returncode == 0, out.stderr
    watch = warden.store.get(wid)
    assert watch is not None and watch.state is State.CANCELLED
    count = gets(warden, COPY, job.product_id)
    time.sleep(1)
    assert gets(warden, COPY, job.product_id) == count
    document = warden.sim.descarteslabs.describe(job.product_id)
    assert document is not None
    assert document["document"]["data"]["attributes"]["state"] == "RUNNING"
