"""High availability on real processes: a Redis primary killed under load fails over to its
replica through Sentinel and the warden goes on by itself; two beats at once check no watch
twice for one due time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from taskwarden.config.redis_url import celery_broker
from taskwarden.lifecycle import State
from taskwarden.models import Watch, watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer, free_port, redis_binary
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store import Store, StoreError

from .conftest import running_warden, wait_for, warden_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MASTER = "taskwarden-test"
TOKEN = "ha-test-token"
STATUS = "tasks/{uuid}/"  # the simulator's route for a Geobox task's status


class Sentinel:
    """A redis-server in sentinel mode on loopback, monitoring one master, with fast failure
    detection (down after 1 s)."""

    def __init__(self, directory: Path, master_port: int, password: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.master_port = master_port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"  # sentinel rewrites it: one file each
        conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f'dir "{self.directory}"',
                    f'logfile "{self.directory / "sentinel.log"}"',
                    f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2",
                    f"sentinel auth-pass {MASTER} {self.password}",
                    f"sentinel down-after-milliseconds {MASTER} 1000",
                    f"sentinel failover-timeout {MASTER} 5000",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [redis_binary(), str(conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def sees(self, replicas: int, sentinels: int) -> bool:
        """Whether this sentinel knows the master's replicas and its peers (failover needs
        both: a replica to promote and a quorum to agree)."""
        with self.client() as client:
            found_replicas = client.sentinel_slaves(MASTER)
            found_sentinels = client.sentinel_sentinels(MASTER)
        up = [r for r in found_replicas if not r.get("is_sdown") and not r.get("is_odown")]
        return len(up) >= replicas and len(found_sentinels) >= sentinels

    def master_port_now(self) -> int:
        with self.client() as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@contextmanager
def sentinel_group(tmp: Path) -> Iterator[tuple[RedisServer, RedisServer, list[Sentinel]]]:
    """A primary, a replica of it and three sentinels watching them, all on loopback, ready to
    fail over (every sentinel sees the replica and its two peers)."""
    with ExitStack() as stack:
        primary = stack.enter_context(RedisServer(tmp / "primary", persist=False))
        password = primary.password
        replica = stack.enter_context(
            RedisServer(
                tmp / "replica",
                persist=False,
                password=password,
                args=["--replicaof", "127.0.0.1", str(primary.port), "--masterauth", password],
            )
        )
        sentinels = []
        for n in range(3):
            sentinel = Sentinel(tmp / f"sentinel{n}", primary.port, password).start()
            stack.callback(sentinel.stop)
            sentinels.append(sentinel)
        wait_for(lambda: all(s.sees(replicas=1, sentinels=2) for s in sentinels), timeout=30)
        yield primary, replica, sentinels


def sentinel_url(password: str, sentinels: list[Sentinel]) -> str:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    return f"redis+sentinel://:{password}@{hosts}/{MASTER}/0"


def send_tracks(url: str, remote_ids: list[str]) -> None:
    """Register by queue message, through the broker URL Celery makes of ``url``."""
    broker, options = celery_broker(url)
    producer = Celery(broker=broker, set_as_current=False)
    producer.conf.broker_transport_options = options
    with producer.connection_for_write() as conn:
        for remote_id in remote_ids:
            producer.send_task(
                "taskwarden.track",
                kwargs={"provider": "geobox", "remote_id": remote_id},
                connection=conn,
            )


def final_watch(store: Store, wid: str) -> Watch | None:
    """The watch once final; None before, and while the store cannot answer (a failover)."""
    try:
        watch = store.get(wid)
    except (StoreError, redis.RedisError):
        return None
    return watch if watch is not None and watch.state.final else None


def accepted(http: httpx.Client, body: dict[str, str]) -> bool:
    """Whether the API registered the watch (201); False while it answers 503 or not at all."""
    try:
        return http.post("/v1/watches", json=body, timeout=10).status_code == 201
    except httpx.TransportError:
        return False


def redis_and_broker_ready(http: httpx.Client) -> dict[str, Any] | None:
    """readyz's checks once its Redis and broker checks pass (the others are not at issue)."""
    try:
        checks: dict[str, Any] = http.get("/readyz", timeout=10).json()["checks"]
    except (httpx.TransportError, ValueError):
        return None
    return checks if checks["redis"]["ok"] and checks["broker"]["ok"] else None


def ending(store: Store, wids: list[str], within: float) -> list[Watch]:
    """The watches once every one is final; fails naming those that were not, and where."""
    deadline = time.monotonic() + within
    while True:
        found = {wid: final_watch(store, wid) for wid in wids}
        if all(found.values()):
            return [w for w in found.values() if w is not None]
        if time.monotonic() > deadline:
            stuck = [wid for wid, w in found.items() if w is None]
            raise AssertionError(f"not final within {within}s: {[store.get(w) for w in stuck]}")
        time.sleep(0.2)


def test_primary_killed_under_load_fails_over_and_every_watch_ends(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """100 watches being polled, then the Redis primary is SIGKILLed: the sentinels promote
    the replica, the warden's processes find the new master by themselves, every watch ends as
    its task was scripted (succeeded and archived, or failed), and registrations sent after the
    failover by queue message, through the API and by the CLI are followed too. What was acknowledged before the kill had been replicated
    (``WAIT``), so only in-flight poll commits can be lost, and those are checked again."""
    scripts = [{"running_seconds": 4, "file_size": 100} for _ in range(80)]
    scripts += [{"running_seconds": 4, "outcome": "failure"} for _ in range(20)]
    with sentinel_group(tmp_path) as (primary, replica, sentinels):
        url = sentinel_url(primary.password, sentinels)
        api = f"http://127.0.0.1:{free_port()}"
        env = warden_env(url, sim, tmp_path / "data",
                         TASKWARDEN_ARCHIVE_URL=(tmp_path / "archive").as_uri(),
                         TASKWARDEN_API__PORT=api.rsplit(":", 1)[1],
                         TASKWARDEN_API__TOKEN=TOKEN,
                         # a job the failover broke is handed out again when its lease ends
                         TASKWARDEN_ARCHIVE_LEASE_SECONDS="5")  # fmt: skip
        store = Store.from_url(url)
        service = Service(env, poll_concurrency=2, archive_concurrency=2, api=True,
                          log_dir=tmp_path / "logs")  # fmt: skip
        with service:
            wait_for(lambda: store.last_heartbeat("dispatch"), timeout=60)
            tasks = sim.geobox.add_tasks(scripts)  # their clocks start now
            send_tracks(url, [t.uuid for t in tasks])
            wait_for(lambda: store.redis.zcard("taskwarden:watches") == 100, timeout=60)
            with redis.Redis.from_url(primary.url) as direct:
                assert direct.wait(1, 10_000) == 1  # every registration is on the replica
            wait_for(lambda: sum(sim.stats.count(task=t.uuid) for t in tasks) >= 150, 30, 0.02)
            primary.kill()  # SIGKILL, mid-load: polls and commits in flight

            wait_for(lambda: all(s.master_port_now() == replica.port for s in sentinels), 30)
            # registrations keep coming, by every door: queue, API, CLI
            late = sim.geobox.add_tasks([{"running_seconds": 1, "file_size": 100}] * 10)
            send_tracks(url, [t.uuid for t in late[:4]])
            with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                for task in late[4:8]:
                    body = {"provider": "geobox", "remote_id": task.uuid}
                    wait_for(lambda b=body: accepted(http, b), timeout=60, every=0.5)
                checks = wait_for(lambda: redis_and_broker_ready(http), timeout=60, every=0.5)
            assert checks["redis"]["ok"] and checks["broker"]["ok"], checks
            for task in late[8:]:
                tracked = subprocess.run(
                    [sys.executable, "-m", "taskwarden", "track", "geobox", task.uuid, "--json"],
                    env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                    check=False,
                )  # fmt: skip
                assert tracked.returncode == 0, tracked.stderr[-2000:]

            everything = [*tasks, *late]
            ended = ending(store, [watch_id("geobox", t.uuid) for t in everything], within=90)
            for task, watch in zip(everything, ended, strict=True):
                want = State.FAILED if task.script.outcome == "failure" else State.SUCCEEDED
                assert watch.state is want, (task.uuid, watch.state, watch.last_error)
            assert store.redis.zcard("taskwarden:watches") == 110
            assert service.alive()
        store.close()
    for role in ("poll", "archive"):  # kombu's URL failover never swapped in its stock transport
        assert (
            "Cannot connect to sentinel://" not in (tmp_path / "logs" / f"{role}.log").read_text()
        )
    for task in [*tasks, *late]:
        if task.script.outcome != "failure":
            manifest = tmp_path / "archive" / "geobox" / task.uuid / "manifest.json"
            assert manifest.exists(), task.uuid
            # at least once: a lost commit of the archive step means a second download
            assert sim.stats.count(route="files/{uuid}/download/", task=task.uuid) >= 1


def test_two_beats_check_no_watch_twice_for_one_due_time(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """Two beat schedulers on one warden (as two hosts would run them for high availability)
    double the dispatch messages, but a due watch is claimed atomically, once: every status
    request the platform saw was a check the store committed (requests == the watch's polls),
    which a second check of the same due time would break."""
    # one request per check (no in-call retries), and leases no slow batch outlives (a reaped
    # lease is checked again, by design): then requests beyond the commits are double checks
    exact = {"TASKWARDEN_HTTP__RETRIES": "0", "TASKWARDEN_LEASE_SECONDS": "60",
             "TASKWARDEN_LOG_LEVEL": "debug"}  # fmt: skip  # beat says "Sending due task" at debug
    with running_warden(tmp_path, sim, **exact) as w:
        second = tmp_path / "beat2"  # its own data dir: its own beat schedule file
        second.mkdir()
        env = {**os.environ, **w.env, "TASKWARDEN_DATA_DIR": str(second)}
        with open(second / "beat.log", "wb") as log:
            beat = subprocess.Popen(
                [sys.executable, "-m", "taskwarden", "beat"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            try:
                wait_for(lambda: b"Sending due task" in (second / "beat.log").read_bytes(), 60)
                scripts = [{"running_seconds": 4, "file_size": 100} for _ in range(30)]
                tasks = sim.geobox.add_tasks(scripts)
                for task in tasks:
                    # no archive step, whose own fetch of the task would count as a request
                    w.send_track(provider="geobox", remote_id=task.uuid, archive=False)
                watches = [w.wait_final(watch_id("geobox", t.uuid), timeout=60) for t in tasks]
            finally:
                beat.terminate()
                beat.wait(20)
    assert b"Sending due task" in (tmp_path / "logs" / "beat.log").read_bytes()  # both beat
    assert all(w.state is State.SUCCEEDED for w in watches), [w.last_error for w in watches]
    polls = [w.polls for w in watches]
    assert sum(polls) > len(watches), polls  # some fell due again, where a double check shows
    requests = [sim.stats.count(route=STATUS, task=t.uuid) for t in tasks]
    assert requests == polls
