"""`taskwarden.Client` against a running warden and its HTTP API served by uvicorn: track, get,
list, cancel, retry, wait (with its progress bar and its timeout), and the errors it raises."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from taskwarden import ApiError, Client, NotFound, Unauthorized, WaitTimeout, api_token
from taskwarden import client as client_module
from taskwarden.api import create_app
from taskwarden.client import ApiUnavailable, Conflict
from taskwarden.config.settings import load_settings
from taskwarden.redis_server import free_port

from .conftest import Warden, wait_for


def serve(app: FastAPI, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """``app`` served by uvicorn on a loopback port, in a thread."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30)
    return server, thread


def stop(served: tuple[uvicorn.Server, threading.Thread]) -> None:
    served[0].should_exit = True
    served[1].join(10)


@pytest.fixture(scope="module")
def api(warden: Warden, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The API of the session warden on a free loopback port, with a generated token; yields its
    URL and the data directory that holds the token file."""
    data_dir = tmp_path_factory.mktemp("client-api")
    port = free_port()
    served = serve(create_app(load_settings(data_dir=data_dir), warden.redis_url), port)
    yield f"http://127.0.0.1:{port}", data_dir
    stop(served)


@pytest.fixture
def tw(api: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """A client built from settings alone, as a user on the warden's machine builds it: the
    URL from TASKWARDEN_API__HOST/PORT, the token from the file the API generated."""
    url, data_dir = api
    monkeypatch.setenv("TASKWARDEN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TASKWARDEN_API__HOST", "127.0.0.1")
    monkeypatch.setenv("TASKWARDEN_API__PORT", url.rsplit(":", 1)[1])
    monkeypatch.delenv("TASKWARDEN_API__TOKEN", raising=False)
    with Client.from_settings() as client:
        assert client.url == url
        yield client


def test_track_is_idempotent_and_get_finds_by_id_or_ref(tw: Client, warden: Warden) -> None:
    """Tracking the same task twice gives one watch; get finds it by id and provider:remote_id,
    with its history."""
    task = warden.sim.geobox.add_task(running_seconds=0.2)
    first = tw.track("geobox", task.uuid, labels={"team": "maps"}, timeout=600)
    again = tw.track("geobox", task.uuid)
    assert first["id"] == again["id"]
    assert first["labels"] == {"team": "maps"} and first["timeout"] == 600
    by_ref = tw.get(f"geobox:{task.uuid}")
    assert by_ref["id"] == first["id"]
    assert by_ref["history"][0]["to"] == "pending"


def test_track_many_answers_each_registration_in_order(tw: Client, warden: Warden) -> None:
    """track_many sends any number of registrations (1000 a request) and answers each one at
    its place: created, already watched, or refused with its reason."""
    task = warden.sim.geobox.add_task(running_seconds=0.2)
    regs = [{"provider": "geobox", "remote_id": task.uuid, "labels": {"team": "maps"}},
            {"provider": "geobox", "remote_id": task.uuid},
            {"provider": "nowhere", "remote_id": "x"},
            *({"provider": "geobox", "remote_id": f"{task.uuid}-{i}"} for i in range(1100))]  # fmt: skip
    results = tw.track_many(regs)
    assert len(results) == len(regs)
    assert [r["status"] for r in results[:3]] == ["created", "exists", "refused"]
    assert results[0]["watch_id"] == results[1]["watch_id"] == tw.get(f"geobox:{task.uuid}")["id"]
    assert "unknown provider" in results[2]["error"]
    assert {r["status"] for r in results[3:]} == {"created"}
    assert tw.get(f"geobox:{task.uuid}-1099")["remote_id"] == f"{task.uuid}-1099"
    for result in results[3:]:  # no such tasks on the simulator: spare the session's warden
        warden.store.cancel(result["watch_id"], time.time())


def test_wait_returns_the_final_watch_and_draws_progress(
    tw: Client, warden: Warden, capsys: pytest.CaptureFixture[str]
) -> None:
    """wait blocks while the task runs a few seconds, returns the final watch with its history,
    and draws a progress bar on stderr."""
    task = warden.sim.geobox.add_task(running_seconds=3, file_size=10)
    wid = tw.track("geobox", task.uuid)["id"]
    final = tw.wait(wid, timeout=60, interval=0.2)
    assert final["id"] == wid and final["state"] == "succeeded"
    assert final["history"][-1]["to"] == "succeeded"
    err = capsys.readouterr().err
    assert wid in err and "succeeded" in err and "100%" in err


def test_wait_times_out_with_a_clear_timeout_error(tw: Client, warden: Warden) -> None:
    """wait on a task that runs on raises WaitTimeout, a TimeoutError naming the watch, its state
    and progress when it gave up; the watch is on the exception. Waiting costs the platform
    nothing: it sees only the warden's own polls."""
    task = warden.sim.geobox.add_task(running_seconds=600, outcome="never")
    wid = tw.track("geobox", task.uuid)["id"]
    wait_for(lambda: tw.get(wid)["progress"] is not None)
    asked = warden.sim.stats.snapshot({}, by_task=True)["tasks"].get(task.uuid, 0)
    with pytest.raises(TimeoutError) as raised:
        tw.wait(wid, timeout=1.5, progress_bar=False, interval=0.05)  # ~30 reads of the warden
    exc = raised.value
    # the platform saw only the warden's polls (every 0.5 s at most), none of the client's reads
    asked_during = warden.sim.stats.snapshot({}, by_task=True)["tasks"][task.uuid] - asked
    assert asked_during < 15
    assert isinstance(exc, WaitTimeout)
    assert exc.watch["state"] == "running"
    message = str(exc)
    assert f"watch {wid} (geobox:{task.uuid}) did not end within 1.5s: still running" in message
    assert f"progress {exc.watch['progress'] * 100:.0f}%" in message
    tw.cancel(wid)


def test_wait_rides_out_an_api_restart(warden: Warden, api: tuple[str, Path]) -> None:
    """An API that stops answering for a while during a wait (a restart) does not end the wait:
    it returns the final watch once the API is back."""
    settings = load_settings(data_dir=api[1])
    port = free_port()
    first = serve(create_app(settings, warden.redis_url), port)
    task = warden.sim.geobox.add_task(running_seconds=5)
    outcome: dict[str, object] = {}

    def wait() -> None:
        try:
            outcome["watch"] = tw.wait(wid, timeout=60, progress_bar=False, interval=0.2)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    with Client(f"http://127.0.0.1:{port}", api_token.load(settings)) as tw:
        wid = tw.track("geobox", task.uuid)["id"]
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.5)
        stop(first)
        time.sleep(2)  # about ten reads fail meanwhile
        second = serve(create_app(settings, warden.redis_url), port)
        waiter.join(60)
        stop(second)
    assert "error" not in outcome, outcome
    final = outcome["watch"]
    assert isinstance(final, dict) and final["state"] == "succeeded"


def test_list_filters_and_follows_cursors(
    tw: Client, warden: Warden, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list applies every filter, follows next_cursor across pages, and stops at limit."""
    run = uuid.uuid4().hex[:8]
    tasks = [warden.sim.geobox.add_task(running_seconds=0.1) for _ in range(5)]
    ids = [tw.track("geobox", t.uuid, labels={"run": run})["id"] for t in tasks]
    for wid in ids:
        warden.wait_final(wid)
    monkeypatch.setattr(client_module, "PAGE_MAX", 2)  # five watches take three pages
    listed = tw.list(labels={"run": run})
    assert [w["id"] for w in listed] == ids[::-1]
    assert [w["id"] for w in tw.list(labels={"run": run}, sort="created_at")] == ids
    assert len(tw.list(labels={"run": run}, limit=3)) == 3
    assert [w["id"] for w in tw.list(q=tasks[2].uuid.upper())] == [ids[2]]
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert len(tw.list(labels={"run": run}, state="succeeded", created_after=hour_ago)) == 5
    assert tw.list(labels={"run": run}, created_before=hour_ago) == []
    assert tw.list(labels={"run": run}, state="failed") == []
    assert tw.list(labels={"run": run}, provider="up42") == []


def test_cancel_ends_a_running_watch(tw: Client, warden: Warden) -> None:
    """cancel ends a watch that runs on; a second cancel returns it unchanged."""
    task = warden.sim.geobox.add_task(running_seconds=600, outcome="never")
    wid = tw.track("geobox", task.uuid)["id"]
    assert tw.cancel(wid)["state"] == "cancelled"
    assert tw.cancel(wid)["state"] == "cancelled"
    assert tw.wait(wid, timeout=5, progress_bar=False)["state"] == "cancelled"


def test_cancel_and_retry_matching_follow_the_batches_of_a_filter(
    tw: Client, warden: Warden, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cancel_matching cancels every live watch of a label across batches (a dry run changes
    nothing), retry_matching re-arms the error ones; each returns the tally; cancel with abort
    of an ended watch is a Conflict."""
    from taskwarden.simulator.geobox import GeoboxTaskSpec

    run = uuid.uuid4().hex[:8]
    tasks = [warden.sim.geobox.add_task(running_seconds=600, outcome="never") for _ in range(3)]
    ids = [tw.track("geobox", t.uuid, labels={"run": run})["id"] for t in tasks]
    lost = str(uuid.uuid4())
    err = tw.track("geobox", lost, labels={"run": run})["id"]
    assert tw.wait(err, timeout=60, progress_bar=False, interval=0.2)["state"] == "error"
    monkeypatch.setattr(client_module, "PAGE_MAX", 2)  # four watches take two batches
    dry = tw.cancel_matching(labels={"run": run}, dry_run=True)
    assert (dry["changed"], dry["ids"], dry["skipped"]) == (3, ids, {"error": 1})
    assert {tw.get(w)["state"] for w in ids} <= {"pending", "running"}
    done = tw.cancel_matching(labels={"run": run}, abort=True)
    assert (done["matched"], done["changed"], done["ids"]) == (4, 3, ids)
    assert {tw.get(w)["state"] for w in ids} == {"cancelled"}
    with pytest.raises(Conflict, match="already ended"):
        tw.cancel(ids[0], abort=True)
    warden.sim.geobox.add_task(GeoboxTaskSpec(uuid=lost, running_seconds=0.2))
    again = tw.retry_matching(labels={"run": run}, state="error")
    assert (again["changed"], again["ids"]) == (1, [err])
    assert tw.wait(err, timeout=60, progress_bar=False, interval=0.2)["state"] == "succeeded"


def test_forget_removes_a_watch_and_refuses_a_live_one_unless_forced(
    tw: Client, warden: Warden
) -> None:
    """forget of a live watch is a Conflict (409) unless force; a forgotten watch is NotFound
    after; a watch registered with its own retention carries it."""
    task = warden.sim.geobox.add_task(running_seconds=600, outcome="never")
    wid = tw.track("geobox", task.uuid, retention=120)["id"]
    assert tw.get(wid)["retention"] == 120
    with pytest.raises(Conflict, match="not final"):
        tw.forget(wid)
    assert tw.forget(f"geobox:{task.uuid}", force=True) == {"id": wid, "state": "pending"}
    with pytest.raises(NotFound):
        tw.get(wid)
    with pytest.raises(NotFound):
        tw.forget(wid)


def test_retry_rearms_an_error_watch_and_refuses_a_finished_one(tw: Client, warden: Warden) -> None:
    """retry re-arms a watch in error (it succeeds once the task exists); retrying a succeeded
    watch is a Conflict (409)."""
    from taskwarden.simulator.geobox import GeoboxTaskSpec

    remote = str(uuid.uuid4())
    wid = tw.track("geobox", remote)["id"]
    assert tw.wait(wid, timeout=60, progress_bar=False, interval=0.2)["state"] == "error"
    warden.sim.geobox.add_task(GeoboxTaskSpec(uuid=remote, running_seconds=0.2))
    assert tw.retry(wid)["state"] in ("pending", "running")
    assert tw.wait(wid, timeout=60, progress_bar=False, interval=0.2)["state"] == "succeeded"
    with pytest.raises(Conflict) as refused:
        tw.retry(wid)
    assert refused.value.status == 409 and "succeeded" in refused.value.detail


def test_api_errors_are_clear(tw: Client, api: tuple[str, Path]) -> None:
    """Bad input is an ApiError with status 422 and the reason; an unknown watch is NotFound; a
    wrong token is Unauthorized; no server is ApiUnavailable."""
    with pytest.raises(ApiError) as bad:
        tw.track("nowhere", "abc")
    assert bad.value.status == 422 and "unknown provider 'nowhere'" in bad.value.detail
    with pytest.raises(ApiError) as worse:
        tw.track("geobox", "a/../b")
    assert worse.value.status == 422 and "remote_id" in worse.value.detail
    with pytest.raises(NotFound) as missing:
        tw.get("w0000000000000000")
    assert missing.value.status == 404
    with Client(api[0], token="wrong") as wrong, pytest.raises(Unauthorized) as denied:
        wrong.track("geobox", str(uuid.uuid4()))
    assert denied.value.status == 401
    nobody = Client(f"http://127.0.0.1:{free_port()}", token="t")
    with nobody, pytest.raises(ApiUnavailable, match="cannot reach the taskwarden API"):
        nobody.get("w0000000000000000")


def test_importing_taskwarden_stays_light() -> None:
    """`import taskwarden` loads neither the client nor httpx until Client is asked for."""
    code = (
        "import sys, taskwarden; assert 'httpx' not in sys.modules, 'httpx loaded';"
        "from taskwarden import Client; assert 'httpx' in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
