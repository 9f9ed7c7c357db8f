"""The commands that read and steer watches (ls, show, wait, retry, events, stats), run as a user
runs them against a running warden; and Celery's own tools through `taskwarden.celery_app`."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from taskwarden import keys
from taskwarden.cli.common import ExitCode, parse_moment
from taskwarden.models import FIELDS, watch_id
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden, wait_for, warden_env

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("15m", NOW - 900),
        ("1h", NOW - 3600),
        ("1.5h", NOW - 5400),
        ("2d", NOW - 2 * 86400),
        ("1w", NOW - 7 * 86400),
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2026-01-31", 1_769_817_600.0),  # no offset: UTC
        ("2026-01-31T12:00:00Z", 1_769_860_800.0),
        ("2026-01-31T12:00:00+01:00", 1_769_857_200.0),
    ],
)
def test_parse_moment_reads_unix_iso_and_spans_ago(text: str, expected: float) -> None:
    """Time filters accept unix seconds, ISO-8601 (UTC without an offset) and spans before now."""
    assert parse_moment(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "-5m", "2026-13-01", ""])
def test_parse_moment_refuses_what_it_cannot_read(text: str) -> None:
    """A time it cannot read is refused with the accepted forms in the message."""
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_moment(text, NOW)


def test_bad_time_filter_exits_2(warden: Warden) -> None:
    """A time filter that is not a time is invalid input (exit 2), with the accepted forms."""
    out = warden.cli("ls", "--created-after", "yesterday")
    assert out.returncode == ExitCode.INVALID
    assert "ISO-8601" in out.stderr


def _track(warden: Warden, remote_id: str, *args: str) -> str:
    out = warden.cli("track", "geobox", remote_id, "--json", *args)
    assert out.returncode == 0, out.stderr
    wid: str = json.loads(out.stdout)["watch_id"]
    return wid


def test_ls_filters_sort_pages_and_json(warden: Warden) -> None:
    """`ls` filters by state, provider, label, text and time, sorts, pages with a cursor, and
    prints the same watches as a table or JSON."""
    run = uuid.uuid4().hex[:8]
    done = warden.sim.geobox.add_task(running_seconds=0.2, file_size=10)
    going = warden.sim.geobox.add_task(running_seconds=600, outcome="never")
    failing = warden.sim.geobox.add_task(running_seconds=0.2, outcome="failure")
    ids = {
        t.uuid: _track(warden, t.uuid, "--label", f"run={run}", "--label", f"name={n}")
        for n, t in (("done", done), ("going", going), ("failing", failing))
    }
    warden.wait_final(ids[done.uuid])
    warden.wait_final(ids[failing.uuid])
    wait_for(lambda: warden.store.get(ids[going.uuid]).progress is not None)  # type: ignore[union-attr]

    def ls(*args: str) -> list[str]:
        out = warden.cli("ls", "--label", f"run={run}", "--json", *args)
        assert out.returncode == 0, out.stderr
        return [w["remote_id"] for w in json.loads(out.stdout)]

    newest_first = [failing.uuid, going.uuid, done.uuid]
    assert ls() == newest_first
    assert ls("--sort", "created_at") == newest_first[::-1]
    assert ls("--state", "succeeded") == [done.uuid]
    assert ls("--state", "running", "--provider", "geobox") == [going.uuid]
    assert ls("--provider", "up42") == []
    assert ls("--label", "name=failing") == [failing.uuid]
    assert ls("-q", going.uuid[:12].upper()) == [going.uuid]  # case-insensitive substring
    assert ls("--created-after", "10m") == newest_first
    assert ls("--created-before", "10m") == []
    assert ls("--updated-before", str(time.time() + 60)) == newest_first
    assert ls("--updated-after", "2000-01-01T00:00:00Z") == newest_first

    first = warden.cli("ls", "--label", f"run={run}", "--json", "--limit", "2")
    assert [w["remote_id"] for w in json.loads(first.stdout)] == newest_first[:2]
    cursor = first.stderr.split("more: --cursor ")[1].split()[0]
    assert ls("--cursor", cursor) == newest_first[2:]

    table = warden.cli("ls", "--label", f"run={run}")
    assert table.returncode == 0, table.stderr
    lines = {line.split()[1]: line for line in table.stdout.splitlines() if "│ w" in line}
    assert set(lines) == set(ids.values())
    running = warden.store.get(ids[going.uuid])
    assert running is not None and running.raw_status
    assert "░" in lines[ids[going.uuid]] and running.raw_status in lines[ids[going.uuid]]
    assert "100%" in lines[ids[done.uuid]] and "SUCCESS" in lines[ids[done.uuid]]
    warden.cli("cancel", ids[going.uuid])


@pytest.mark.parametrize(
    ("outcome", "track_args", "code", "state"),
    [
        ("success_file", (), ExitCode.OK, "succeeded"),
        ("failure", (), ExitCode.FAILED, "failed"),
        ("aborted", (), ExitCode.CANCELLED, "cancelled"),
        ("never", ("--timeout", "1"), ExitCode.TIMED_OUT, "timed_out"),
        ("missing", (), ExitCode.ERROR, "error"),
    ],
)
def test_wait_exits_with_the_code_of_the_final_state(
    warden: Warden, outcome: str, track_args: tuple[str, ...], code: int, state: str
) -> None:
    """`wait` blocks until the watch ends and exits with the documented code for its state."""
    if outcome == "missing":
        remote = str(uuid.uuid4())
    else:
        remote = warden.sim.geobox.add_task(running_seconds=1.5, outcome=outcome).uuid
    wid = _track(warden, remote, *track_args)
    out = warden.cli("wait", wid, "--interval", "0.2", "--json", "--timeout", "50")
    assert out.returncode == code, out.stderr[-2000:]
    final = json.loads(out.stdout)
    assert (final["id"], final["state"]) == (wid, state)
    assert final["history"][-1]["to"] == state
    if state == "succeeded":
        assert "100%" in out.stderr  # the progress bar's last frame


def test_wait_gives_up_at_its_timeout_with_a_clear_message(warden: Warden) -> None:
    """`wait --timeout` exits 4 with the watch, its state and progress when it gave up; a
    watch that does not exist exits 3."""
    task = warden.sim.geobox.add_task(running_seconds=600, outcome="never")
    wid = _track(warden, task.uuid)
    wait_for(lambda: warden.store.get(wid).progress is not None)  # type: ignore[union-attr]
    started = time.monotonic()
    out = warden.cli("wait", f"geobox:{task.uuid}", "--timeout", "2", "--interval", "0.2")
    assert out.returncode == ExitCode.WAIT_TIMEOUT
    assert time.monotonic() - started < 30
    assert f"watch {wid} (geobox:{task.uuid}) did not end within 2s: still running" in out.stderr
    assert "progress " in out.stderr and "%" in out.stderr
    missing = warden.cli("wait", "w0000000000000000", "--no-progress")
    assert missing.returncode == ExitCode.NOT_FOUND and "no watch" in missing.stderr
    warden.cli("cancel", wid)


def test_wait_and_events_ride_out_a_redis_restart(tmp_path: Path, sim: SimulatorServer) -> None:
    """`wait` and `events --follow` reading a Redis that restarts under them keep going: `wait`
    exits 0 when the watch succeeds, and the follower prints the transitions that came after.
    The task is held unfinished (an unknown status word) until Redis is back, so the ending
    happens after the restart however slowly the readers start."""
    with running_warden(tmp_path, sim, persist=True, processes=1) as w:
        task = sim.geobox.add_task(running_seconds=0.5, file_size=10)
        hold = sim.inject(kind="unknown_status", task=task.uuid, word="HELD", count=1_000_000)
        wid = _track(w, task.uuid)
        env = {**os.environ, **w.env}
        me = [sys.executable, "-m", "taskwarden"]
        waiting = subprocess.Popen(
            [*me, "wait", wid, "--interval", "0.2", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        following = subprocess.Popen(
            [*me, "events", "--follow", "--json", "--last", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        lines, pump = _lines(following)
        try:
            wait_for(lambda: (x := w.store.get(wid)) is not None and x.polls >= 1, timeout=30)
            seen = [json.loads(lines.get(timeout=60))["to"]]  # the newest event: it is reading
            time.sleep(1)  # and so is `wait`
            w.redis_server.stop()
            time.sleep(2)  # about ten reads fail meanwhile
            w.redis_server.start()
            sim.faults.remove(hold)  # now the task may end
            out, err = waiting.communicate(timeout=90)
            while "succeeded" not in seen:
                event = json.loads(lines.get(timeout=30))
                if event["watch_id"] == wid:
                    seen.append(event["to"])
            assert following.poll() is None  # still following
        finally:
            for proc in (waiting, following):
                proc.kill()
            waiting.communicate()
            following.wait(10)
            pump.join(10)
            assert following.stdout is not None
            following.stdout.close()
    assert waiting.returncode == ExitCode.OK, err[-2000:]
    assert json.loads(out)["state"] == "succeeded"
    assert seen[-2:] == ["archiving", "succeeded"]


def test_retry_rearms_an_error_watch_and_refuses_others(warden: Warden) -> None:
    """`retry` re-arms a watch in error (it is polled again and ends once the task exists); a
    succeeded watch is refused with exit 2 and an unknown one with 3."""
    remote = str(uuid.uuid4())
    wid = _track(warden, remote)
    assert warden.wait_final(wid).state == "error"
    # the task appears on the platform now; a retry finds it
    from taskwarden.simulator.geobox import GeoboxTaskSpec

    warden.sim.geobox.add_task(GeoboxTaskSpec(uuid=remote, running_seconds=0.2))
    out = warden.cli("retry", wid, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] in ("pending", "running")
    assert warden.wait_final(wid).state == "succeeded"
    history = json.loads(warden.cli("show", wid, "--json").stdout)["history"]
    assert [h["to"] for h in history].count("error") == 1
    again = warden.cli("retry", wid)
    assert again.returncode == ExitCode.INVALID
    assert "succeeded" in again.stderr
    assert warden.cli("retry", "w0000000000000000").returncode == ExitCode.NOT_FOUND


def _lines(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's stdout lines, read by a thread as they come."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def test_events_follow_tails_transitions_as_they_happen(warden: Warden) -> None:
    """`events --follow --json` prints each transition of a watch registered after it started,
    one JSON object a line, and keeps going until stopped; without --follow it prints recent
    events and returns."""
    follow = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "events", "--follow", "--json", "--last", "0"],
        env={**os.environ, **warden.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines, pump = _lines(follow)
    try:
        time.sleep(2)  # let it start reading: only events after this are asked of it
        task = warden.sim.geobox.add_task(running_seconds=0.5)
        wid = _track(warden, task.uuid)
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + 60
        while not (seen and seen[-1]["to"] == "succeeded"):
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            event = json.loads(line)
            if event["watch_id"] == wid:
                seen.append(event)
        assert follow.poll() is None  # still following
    finally:
        follow.terminate()
        follow.wait(20)
        pump.join(10)
        assert follow.stdout is not None
        follow.stdout.close()
    assert seen[0]["from"] == "" and seen[0]["to"] == "pending"
    assert [e["to"] for e in seen][-2:] == ["archiving", "succeeded"]
    assert all(e["id"] and e["provider"] == "geobox" and e["remote_id"] == task.uuid for e in seen)
    recent = warden.cli("events", "--last", "200")
    assert recent.returncode == 0
    assert f"{wid}  geobox:{task.uuid}  archiving -> succeeded" in recent.stdout
    after = warden.cli("events", "--after", seen[-2]["id"], "--json")
    assert json.loads(after.stdout.splitlines()[0])["id"] == seen[-1]["id"]


def test_show_stats_deadletters_and_providers_speak_json(warden: Warden) -> None:
    """Every reading command has --json: show (history, outputs, webhook), stats, deadletters,
    providers; `track --webhook` is checked like any registration field."""
    task = warden.sim.geobox.add_task(running_seconds=0.2, file_size=100)
    hook = "http://127.0.0.1:9/hook"
    wid = _track(warden, task.uuid, "--webhook", hook)
    warden.wait_final(wid)
    shown = json.loads(warden.cli("show", wid, "--json").stdout)
    assert shown["webhook"] == hook
    assert 100 in [o["size"] for o in shown["outputs"]]
    assert shown["history"][-1]["to"] == "succeeded"
    text = warden.cli("show", wid).stdout
    assert "outputs:" in text and "history:" in text and "100%" in text
    assert f"webhook      {hook}: " in text
    refused = warden.cli("track", "geobox", str(uuid.uuid4()), "--webhook", "ftp://x/y")
    assert refused.returncode == ExitCode.INVALID and "webhook" in refused.stderr
    stats = json.loads(warden.cli("stats", "--json").stdout)
    assert stats["counts"]["succeeded"] >= 1
    assert stats["providers"]["geobox"]["counts"]["succeeded"] >= 1
    assert stats["dispatch_lag_seconds"] >= 0
    assert "dispatch lag" in warden.cli("stats").stdout
    assert isinstance(json.loads(warden.cli("deadletters", "--json").stdout), list)
    assert isinstance(json.loads(warden.cli("providers", "--json").stdout), list)
    assert watch_id("geobox", task.uuid) == wid


def test_track_takes_an_archive_mode_and_show_prints_it_with_the_platforms_record(
    warden: Warden,
) -> None:
    """`track --archive final` registers that mode (none: false; --no-archive contradicting
    it is refused), and `show` prints the mode and the platform's times and details."""
    task = warden.sim.geobox.add_task(running_seconds=0.2, outcome="failure")
    wid = _track(warden, task.uuid, "--archive", "final")
    assert warden.wait_final(wid).state == "failed"
    shown = json.loads(warden.cli("show", wid, "--json").stdout)
    assert (shown["archive"], shown["outcome"], shown["state"]) == ("final", "failed", "failed")
    none = _track(warden, str(uuid.uuid4()), "--archive", "none")
    assert json.loads(warden.cli("show", none, "--json").stdout)["archive"] is False
    both = warden.cli("track", "geobox", str(uuid.uuid4()), "--no-archive", "--archive", "final")
    assert both.returncode == ExitCode.INVALID and "contradicts" in both.stderr
    # what a provider's checks leave on the record, overwritten with known values
    warden.store.redis.hset(keys.watch(wid), mapping={
        FIELDS["remote_started_at"]: "1700000000", FIELDS["details"]: '{"exit_code":3}'})  # fmt: skip
    text = warden.cli("show", wid).stdout
    assert "archive      final" in text
    platform = next(line for line in text.splitlines() if line.startswith("platform "))
    assert "started 2023-11-14 22:13:20" in platform
    assert 'details      {"exit_code": 3}' in text


def test_celery_tools_reach_the_warden_through_celery_app(warden: Warden) -> None:
    """`celery -A taskwarden.celery_app inspect ping` (what Flower builds on) finds the
    warden's workers on the same broker."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "taskwarden.celery_app", "inspect", "ping",
         "--timeout", "10"],
        env={**os.environ, **warden.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pong" in out.stdout


def test_a_watch_s_retention_has_the_warden_remove_it_and_its_archive_stays(
    warden: Warden,
) -> None:
    """`track --retention 1`: once succeeded and archived, the dispatch tick's sweep removes
    the watch (show: not found, no label entry, no count), and its manifest stays on disk."""
    task = warden.sim.geobox.add_task(running_seconds=0.2, file_name="a.tif", file_size=1000)
    label = f"run={uuid.uuid4()}"
    wid = _track(warden, task.uuid, "--retention", "1", "--label", label)
    assert warden.wait_final(wid).state == "succeeded"
    assert warden.store.redis.zscore(keys.FINISHED, wid) is not None
    wait_for(lambda: warden.store.get(wid) is None, timeout=30)
    assert warden.cli("show", wid).returncode == ExitCode.NOT_FOUND
    assert warden.store.list_watches(labels=dict([label.split("=")]))[0] == []
    assert warden.store.redis.zscore(keys.FINISHED, wid) is None
    assert int(warden.store.metric_cells()["watches_removed"]) >= 1
    folder = warden.archive_dir / "geobox" / task.uuid  # type: ignore[operator]
    assert json.loads((folder / "manifest.json").read_text())["watch_id"] == wid


def test_forget_removes_a_final_watch_and_refuses_a_live_one_unless_forced(
    warden: Warden,
) -> None:
    """`forget` removes an ended watch by provider:remote_id; a live one exits 2 naming its
    state unless --force; an unknown one exits 3; the task tracked again is a new watch."""
    task = warden.sim.geobox.add_task(running_seconds=0.2)
    wid = _track(warden, task.uuid)
    assert warden.wait_final(wid).state == "succeeded"
    out = warden.cli("forget", f"geobox:{task.uuid}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{wid} forgotten (was succeeded)"
    assert warden.store.get(wid) is None
    assert warden.cli("forget", wid).returncode == ExitCode.NOT_FOUND
    live = warden.sim.geobox.add_task(running_seconds=600)
    lid = _track(warden, live.uuid)
    refused = warden.cli("forget", lid)
    assert refused.returncode == ExitCode.INVALID
    assert "not final" in refused.stderr and "--force" in refused.stderr
    assert warden.cli("forget", lid, "--force").returncode == 0
    assert warden.store.get(lid) is None
    before = time.time()
    again = _track(warden, task.uuid)
    assert again == wid and warden.store.history(wid)[0]["note"] == "registered"
    assert all(h["at"] >= before for h in warden.store.history(wid))  # none of the old watch's


def test_cancel_and_retry_take_the_ls_filters_with_a_dry_run(warden: Warden) -> None:
    """`cancel --label` cancels every live watch of a run (a dry run first prints how many and
    which, and changes nothing); `retry --state error --label` re-arms that run's error watches
    and leaves the rest; a ref with filters, or neither, is a usage error (exit 2)."""
    run = uuid.uuid4().hex[:8]
    going = [warden.sim.geobox.add_task(running_seconds=600, outcome="never") for _ in range(3)]
    ids = [_track(warden, t.uuid, "--label", f"run={run}") for t in going]
    lost = _track(warden, str(uuid.uuid4()), "--label", f"run={run}")  # no such task: error
    assert warden.wait_final(lost).state == "error"

    dry = warden.cli("cancel", "--label", f"run={run}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "would be cancelled: 3 of 4 matching"
    assert [line.strip() for line in dry.stdout.splitlines()[1:4]] == ids
    assert "left alone: 1 error" in dry.stdout
    assert {warden.store.get(w).state for w in ids} <= {"pending", "running"}  # type: ignore[union-attr]

    done = warden.cli("cancel", "--label", f"run={run}", "--json")
    assert done.returncode == 0, done.stderr
    tally = json.loads(done.stdout)
    assert (tally["changed"], tally["ids"], tally["skipped"]) == (3, ids, {"error": 1})
    assert [warden.store.get(w).state for w in ids] == ["cancelled"] * 3  # type: ignore[union-attr]
    again = warden.cli("cancel", "--label", f"run={run}", "--json")
    assert json.loads(again.stdout)["changed"] == 0

    retried = warden.cli("retry", "--state", "error", "--label", f"run={run}", "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["ids"] == [lost]
    assert warden.wait_final(lost).state == "error"  # still no such task; it was checked again
    history = json.loads(warden.cli("show", lost, "--json").stdout)["history"]
    assert [h["to"] for h in history].count("error") == 2

    both = warden.cli("retry", lost, "--state", "error")
    assert both.returncode == ExitCode.INVALID and "not both (--state)" in both.stderr
    neither = warden.cli("cancel")
    assert neither.returncode == ExitCode.INVALID and "at least one filter" in neither.stderr


def test_cancel_abort_of_an_ended_watch_is_refused_and_sends_nothing(warden: Warden) -> None:
    """`cancel --abort` of a watch that had already ended exits 2 and its history gains no
    "abort sent" line; of a live one it cancels and the platform is asked to abort."""
    task = warden.sim.geobox.add_task(running_seconds=0.2, file_size=10)
    wid = _track(warden, task.uuid)
    assert warden.wait_final(wid).state == "succeeded"
    out = warden.cli("cancel", wid, "--abort")
    assert out.returncode == ExitCode.INVALID
    assert "had already ended (succeeded); no abort sent" in out.stderr
    history = json.loads(warden.cli("show", wid, "--json").stdout)["history"]
    assert not any("abort" in (h.get("note") or "") for h in history)

    live = warden.sim.geobox.add_task(running_seconds=600, outcome="never")
    lid = _track(warden, live.uuid)
    assert warden.cli("cancel", lid, "--abort").returncode == 0

    def noted() -> bool:
        notes = [h.get("note") or "" for h in warden.store.history(lid)]
        return "abort sent to the platform" in notes

    wait_for(noted)


def test_track_warns_when_no_worker_consumes_the_poll_queue(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """With no warden running, `track` still registers but says on stderr that nothing will
    check the watch; with a live worker heartbeat it says nothing of the kind."""
    env = {**os.environ, **warden_env(redis_url, sim, tmp_path)}

    def track() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "taskwarden", "track", "geobox",
                               str(uuid.uuid4())], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip

    out = track()
    assert out.returncode == 0, out.stderr
    assert "registered (pending)" in out.stdout
    assert "warning: no worker heartbeat is live on 'taskwarden.poll'" in out.stderr
    from taskwarden.store import Store

    store = Store.from_url(redis_url)
    store.worker_heartbeat("poll@here", time.time(), 60, queues=[keys.QUEUE_POLL])
    quiet = track()
    store.redis.close()
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
