"""The long-running readers (`taskwarden events --follow`, `taskwarden wait`, the API's event
stream) outlast quiet periods longer than redis-py's default read timeout (5 s since redis-py 8)
and a Redis restarted under them, against the redis-py the project installs."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from taskwarden.api import create_app
from taskwarden.lifecycle import State
from taskwarden.models import Registration, watch_id
from taskwarden.redis_server import RedisServer
from taskwarden.store.watches import Store

from .test_api import serve, settings_for, to_state

QUIET = 6.5  # seconds with no event: more than redis-py 8's default read timeout


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, append-only, so that a restart keeps what it held."""
    with RedisServer(tmp_path / "redis", persist=True) as server:
        yield server


def register(store: Store, remote_id: str) -> str:
    store.register(Registration(provider="geobox", remote_id=remote_id), time.time())
    return watch_id("geobox", remote_id)


def restart(server: RedisServer) -> None:
    server.stop()  # SIGTERM: flushes its append-only file; readers meet a closed connection
    time.sleep(1.5)  # down long enough for a reader to retry at least once
    server.start()


class Lines:
    """The stdout lines of a process, read by a thread so that a test can wait for one."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def next(self, timeout: float = 30.0) -> str:
        return self._lines.get(timeout=timeout)


def cli(server: RedisServer, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TASKWARDEN_REDIS_URL": server.url,
           "TASKWARDEN_DATA_DIR": str(tmp_path / "data"), "TASKWARDEN_LOG_FORMAT": "json"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "taskwarden", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_events_follow_outlasts_a_quiet_spell_and_a_redis_restart(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    """`events --follow` prints an event that comes after more than 6 quiet seconds, then one
    that comes after Redis was restarted under it; it is still running at the end."""
    store = Store.from_url(private_redis.url)
    register(store, "first")
    proc = cli(private_redis, tmp_path, "events", "--follow", "--json")
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        assert json.loads(lines.next())["remote_id"] == "first"
        time.sleep(QUIET)
        register(store, "after-quiet")
        assert json.loads(lines.next())["remote_id"] == "after-quiet"
        restart(private_redis)
        register(store, "after-restart")
        assert json.loads(lines.next())["remote_id"] == "after-restart"
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        store.close()
    assert "Traceback" not in err, err
    assert "redis unavailable" in err  # it said what it was waiting for


def test_wait_outlasts_a_redis_restart(private_redis: RedisServer, tmp_path: Path) -> None:
    """`taskwarden wait` on a running watch rides out a Redis restart and exits with the watch's
    final state once it ends."""
    store = Store.from_url(private_redis.url)
    wid = register(store, "waited")
    proc = cli(private_redis, tmp_path, "wait", wid, "--interval", "0.2", "--no-progress")
    try:
        time.sleep(QUIET)
        restart(private_redis)
        to_state(store, wid, State.FAILED)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        store.close()
    assert proc.returncode == 10, err  # failed
    assert f"{wid} failed" in out


def test_event_stream_outlasts_a_quiet_spell_and_a_redis_restart(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    """The API's event stream, with a heartbeat longer than redis-py's default read timeout,
    sends an event after a quiet spell and one after Redis was restarted, on one connection."""
    app = create_app(settings_for(tmp_path), private_redis.url, sse_heartbeat=QUIET)
    store = Store.from_url(private_redis.url)
    with serve(app) as http, http.stream("GET", "/v1/events", timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines) == ": connected"
        time.sleep(QUIET + 1)
        register(store, "after-quiet")
        assert _next_data(lines)["remote_id"] == "after-quiet"
        restart(private_redis)
        register(store, "after-restart")
        assert _next_data(lines)["remote_id"] == "after-restart"
    store.close()


def _next_data(lines: Iterator[str]) -> dict[str, str]:
    for line in lines:
        if line.startswith("data: "):
            data: dict[str, str] = json.loads(line.removeprefix("data: "))
            return data
    raise AssertionError("the stream ended")
