"""`taskwarden worker` with no supervisor (no `taskwarden run`, no restart policy) outlasts what
the supervisor used to paper over: a Redis that is not up yet when it starts, and a Redis
restarted under it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import Celery

from taskwarden.models import watch_id
from taskwarden.redis_server import RedisServer
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store

from .conftest import wait_for, warden_env


@contextmanager
def worker(
    server: RedisServer, sim: SimulatorServer, tmp: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A lone `taskwarden worker` on the registration queue, its output in ``tmp/worker.log``."""
    env = {**os.environ, **warden_env(server.url, sim, tmp / "data"),
           "TASKWARDEN_ARCHIVE_URL": (tmp / "archive").as_uri()}  # fmt: skip
    with open(tmp / "worker.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskwarden", "worker", "-Q", "celery", "-c", "1"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def register(server: RedisServer, remote_id: str) -> str:
    """Send a registration as any Celery producer would."""
    producer = Celery(broker=server.url, set_as_current=False)
    with producer.connection_for_write() as conn:
        producer.send_task(
            "taskwarden.track", kwargs={"provider": "geobox", "remote_id": remote_id},
            connection=conn,
        )  # fmt: skip
    return watch_id("geobox", remote_id)


def registered(server: RedisServer, wid: str, timeout: float = 60.0) -> None:
    store = Store.from_url(server.url)
    try:
        wait_for(lambda: store.get(wid), timeout=timeout)
    finally:
        store.close()


def test_a_lone_worker_outlasts_a_redis_restart(tmp_path: Path, sim: SimulatorServer) -> None:
    """Redis stopped and started again under a lone worker: the worker is still running and
    serves the registrations sent before and after."""
    with (
        RedisServer(tmp_path / "redis", persist=True) as server,
        worker(server, sim, tmp_path) as proc,
    ):
        registered(server, register(server, "before"))
        server.stop()
        time.sleep(2)  # down for a while: the worker's reads fail and it reconnects
        server.start()
        registered(server, register(server, "after"))
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    log = (tmp_path / "worker.log").read_text()
    assert "Unrecoverable error" not in log


def test_a_lone_worker_waits_for_a_redis_that_is_not_up_yet(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """A worker started before its Redis waits for it (a warning per try) and then serves."""
    server = RedisServer(tmp_path / "redis", persist=True)
    with worker(server, sim, tmp_path) as proc:
        log = tmp_path / "worker.log"
        wait_for(lambda: "redis.waiting" in log.read_text(), timeout=30)
        with server:  # starts it
            registered(server, register(server, "late"))
            assert proc.poll() is None, log.read_text()[-3000:]
