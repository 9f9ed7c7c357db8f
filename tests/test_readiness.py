"""Readiness of the queues: ``/readyz`` fails, naming the queue, while no live worker consumes
one of taskwarden's queues, as the workers' own heartbeats report them; a worker too old to
report its queues never makes it fail."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from taskwarden import keys
from taskwarden.api import create_app
from taskwarden.processes import commands
from taskwarden.store.watches import Store
from taskwarden.worker import heartbeat as worker_heartbeat
from tests.conftest import wait_for
from tests.test_api import serve, settings_for

CONTROL, POLL, ARCHIVE = list(keys.CONTROL_QUEUES), list(keys.POLL_QUEUES), [keys.QUEUE_ARCHIVE]


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with serve(create_app(settings_for(tmp_path), redis_url)) as client:
        yield client


def queues_check(client: httpx.Client) -> dict[str, Any]:
    check: dict[str, Any] = client.get("/readyz").json()["checks"]["queues"]
    return check


@pytest.mark.parametrize(
    ("beats", "ok", "named"),
    [
        ({}, False, list(keys.ALL_QUEUES)),
        ({"poll-1@h": POLL}, False, [*CONTROL, keys.QUEUE_ARCHIVE]),
        ({"archive-1@h": ARCHIVE}, False, CONTROL + POLL),
        ({"poll-1@h": POLL, "archive-1@h": ARCHIVE}, False, CONTROL),
        ({"c@h": CONTROL, "poll-1@h": POLL, "archive-1@h": ARCHIVE}, True, list(keys.ALL_QUEUES)),
        ({"all-1@h": [*keys.ALL_QUEUES, "other"]}, True, list(keys.ALL_QUEUES)),
        # an older worker says nothing of its queues: it may consume the archive queue
        ({"poll-1@h": POLL, "old@h": None}, True, [*CONTROL, keys.QUEUE_ARCHIVE, "old@h"]),
        ({"old@h": None}, True, ["old@h"]),
    ],
)
def test_queues_check_names_the_queues_nobody_consumes(
    api: httpx.Client, store: Store, beats: dict[str, list[str] | None], ok: bool, named: list[str]
) -> None:
    """The queues check fails exactly when a queue has no reporting consumer and no silent
    (older) worker is alive, and its detail names the queues it is about."""
    for node, queues in beats.items():
        store.worker_heartbeat(node, 1.0, ttl=30, queues=queues)
    check = queues_check(api)
    assert check["ok"] is ok
    for name in named:
        assert name in check["detail"]
    if not ok:
        assert check["detail"].startswith("no worker consumes ")
        assert f"-Q {','.join(named)}" in check["detail"]


def test_old_heartbeats_read_as_alive_with_unknown_queues(store: Store) -> None:
    """A heartbeat without queues (as an older worker beats) is a live worker whose queues are
    unknown; a stopped worker's heartbeat, queues and registry entry go together."""
    store.worker_heartbeat("old@h", 12.5, ttl=30)
    store.worker_heartbeat("new@h", 13.0, ttl=30, queues=["b", "a"])
    assert store.worker_heartbeats() == {"new@h": 13.0, "old@h": 12.5}
    assert store.worker_queues() == {"new@h": ["a", "b"], "old@h": None}
    store.forget_worker("new@h")
    assert store.worker_queues() == {"old@h": None}
    assert store.redis.keys("*new@h*") == []
    assert store.redis.zrange(keys.WORKERS, 0, -1) == ["old@h"]


def test_workers_are_found_without_scanning_and_expired_ones_pruned(store: Store) -> None:
    """Live workers come from the registry, not from the keyspace: no SCAN reaches Redis while
    stats-like reads run, a worker whose heartbeat expired is dropped from the registry on the
    next read, and one silent for twice its TTL is dropped when another worker beats."""
    store.worker_heartbeat("live@h", 100.0, ttl=30, queues=["a"])
    store.worker_heartbeat("gone@h", 99.0, ttl=0.05, queues=["a"])
    store.worker_heartbeat("ancient@h", 10.0, ttl=30)
    store.redis.delete(keys.WORKER_HEARTBEAT + "ancient@h")  # as if its TTL ran out long ago
    store.redis.zadd(keys.WORKERS, {"ancient@h": 10.0})
    wait_for(lambda: store.redis.exists(keys.WORKER_HEARTBEAT + "gone@h") == 0, timeout=10)
    before = store.redis.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    assert store.workers() == {"live@h": (100.0, ["a"])}
    assert store.worker_heartbeats() == {"live@h": 100.0}
    assert store.redis.info("commandstats").get("cmdstat_scan", {}).get("calls", 0) == before
    assert store.redis.zrange(keys.WORKERS, 0, -1) == ["live@h"]
    store.redis.set(keys.WORKER_HEARTBEAT + "stale@h", "1.0", px=30_000)
    store.redis.zadd(keys.WORKERS, {"stale@h": 1.0})
    store.worker_heartbeat("live@h", 100.0, ttl=30)  # 1.0 < 100 - 2 * 30: pruned on write
    assert store.redis.zrange(keys.WORKERS, 0, -1) == ["live@h"]


@contextmanager
def worker(role: str, redis_url: str, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker of ``role`` ("control", "poll" or "archive"), started as ``taskwarden run``
    does."""
    env = {
        **os.environ,
        "TASKWARDEN_REDIS_URL": redis_url,
        "TASKWARDEN_DATA_DIR": str(tmp / "data"),
        "TASKWARDEN_ARCHIVE_URL": (tmp / "archive").as_uri(),
        "TASKWARDEN_LOG_FORMAT": "json",
    }
    argv = commands(poll_concurrency=1, archive_concurrency=1)[role]
    with open(tmp / f"{role}.log", "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_real_workers_report_their_queues_and_readyz_follows(
    api: httpx.Client, store: Store, redis_url: str, tmp_path: Path
) -> None:
    """Real control and poll workers report the queues of their -Q, and readyz fails naming
    the archive queue until an archive worker runs; a queue cancelled at run time (celery
    control cancel_consumer) is reported gone and named; a stopped worker's queues go with it."""

    def reported(node_prefix: str) -> list[str] | None:
        found = [q for n, q in store.worker_queues().items() if n.startswith(node_prefix)]
        return found[0] if found else None

    with worker("control", redis_url, tmp_path), worker("poll", redis_url, tmp_path):
        assert wait_for(lambda: reported("control-"), timeout=60) == sorted(keys.CONTROL_QUEUES)
        assert wait_for(lambda: reported("poll-"), timeout=60) == sorted(keys.POLL_QUEUES)
        check = queues_check(api)
        assert not check["ok"]
        assert check["detail"].startswith(f"no worker consumes {keys.QUEUE_ARCHIVE}:")
        with worker("archive", redis_url, tmp_path):
            assert wait_for(lambda: reported("archive-"), timeout=60) == [keys.QUEUE_ARCHIVE]
            assert queues_check(api)["ok"]
            poll_node = next(n for n in store.worker_queues() if n.startswith("poll-"))
            control = Celery(broker=redis_url, set_as_current=False)
            answer = control.control.cancel_consumer(
                keys.QUEUE_WEBHOOK, destination=[poll_node], reply=True, timeout=10
            )
            assert answer and "no longer consuming" in str(answer)
            timeout = 4 * worker_heartbeat.INTERVAL
            wait_for(lambda: keys.QUEUE_WEBHOOK not in (reported("poll-") or []), timeout)
            check = queues_check(api)
            assert not check["ok"]
            assert check["detail"].startswith(f"no worker consumes {keys.QUEUE_WEBHOOK}:")
            control.close()
        wait_for(lambda: reported("archive-") is None, timeout=30)
        assert keys.QUEUE_ARCHIVE in queues_check(api)["detail"]
