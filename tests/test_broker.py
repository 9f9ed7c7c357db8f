"""The broker transport (taskwarden.broker): a worker killed while it fetches loses nothing.

Real Redis, real Celery workers (``tests/broker_app.py``) with either kombu's stock Redis
transport or taskwarden's. The window is made deterministic by freezing the worker's main process
(SIGSTOP) while it idles, sending a message, then killing it: whatever Redis handed over in that
time is in flight, exactly as when a kill lands between a fetch and its record.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Exchange, Producer, Queue

from taskwarden.worker.broker import Transport

from .conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    """A Celery worker of tests/broker_app.py in a process group of its own."""

    def __init__(self, url: str, transport: str, log: Path, visibility: float = 3600) -> None:
        env = {
            **os.environ,
            "BROKER_TEST_URL": url,
            "BROKER_TEST_TRANSPORT": transport,
            "BROKER_TEST_VISIBILITY": str(visibility),
        }
        argv = [sys.executable, "-m", "celery", "-A", "tests.broker_app", "worker", "-c", "2",
                "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "info"]  # fmt: skip
        with log.open("a") as out:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.process.poll() is None:
            w.kill()


def blocked_on(client: redis.Redis, command: str) -> bool:
    """A worker idles in `command` (its connection is blocked there)."""
    return any(c["cmd"] == command and "b" in c["flags"] for c in client.client_list())


def runs(client: redis.Redis) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall("runs").items()}


def send(url: str, *ns: int, seconds: float = 0.0) -> None:
    producer = Celery(broker=url, set_as_current=False)  # any producer: stock kombu
    with producer.connection_for_write() as conn:
        for n in ns:
            producer.send_task("count", args=[n, seconds], connection=conn)


def freeze_send_kill(
    url: str, client: redis.Redis, worker: Worker, idle_command: str
) -> tuple[int, int]:
    """Freeze an idle worker, send one message, kill the worker: (queued, unacked) after."""
    wait_for(lambda: blocked_on(client, idle_command), 30)
    os.kill(worker.process.pid, signal.SIGSTOP)
    send(url, 1)
    time.sleep(0.5)  # ample time for Redis to answer a pending fetch
    worker.kill()
    return int(client.llen("celery")), int(client.hlen("unacked"))


def test_stock_kombu_loses_a_message_its_killed_worker_had_fetched(
    redis_url: str, client: redis.Redis, workers: list[Worker], tmp_path: Path
) -> None:
    """Why taskwarden has its own transport: kombu's BRPOP hands the message to a process that
    dies before recording it, and no restore can ever bring it back."""
    workers.append(Worker(redis_url, "stock", tmp_path / "stock.log"))
    queued, unacked = freeze_send_kill(redis_url, client, workers[0], "brpop")
    assert (queued, unacked) == (0, 0)  # gone from the queue, never recorded

    workers.append(Worker(redis_url, "stock", tmp_path / "stock.log", visibility=1))
    time.sleep(4)  # a fresh worker, past the visibility timeout: nothing comes back
    assert runs(client) == {}


def test_a_message_fetched_by_a_killed_worker_runs_once_on_the_next(
    redis_url: str, client: redis.Redis, workers: list[Worker], tmp_path: Path
) -> None:
    """With taskwarden's transport the message is still queued (the idle worker was only
    waiting) or recorded as unacked (it had fetched): the next worker runs it, once."""
    workers.append(Worker(redis_url, "taskwarden", tmp_path / "ours.log"))
    queued, unacked = freeze_send_kill(redis_url, client, workers[0], "blmove")
    assert queued + unacked == 1

    workers.append(Worker(redis_url, "taskwarden", tmp_path / "ours.log", visibility=1))
    wait_for(lambda: runs(client) == {1: 1}, 30)
    time.sleep(2)  # and not again
    assert runs(client) == {1: 1}
    assert (client.llen("celery"), client.hlen("unacked")) == (0, 0)


def test_workers_killed_at_random_under_load_lose_nothing(
    redis_url: str, client: redis.Redis, workers: list[Worker], tmp_path: Path
) -> None:
    """A queue of short tasks, a worker killed (whole process group) at random moments six
    times: every task runs at least once (at-least-once: a killed task may run twice)."""
    rng = random.Random(7)
    total = 300
    send(redis_url, *range(total), seconds=0.01)
    for _ in range(6):
        worker = Worker(redis_url, "taskwarden", tmp_path / "storm.log", visibility=1)
        workers.append(worker)
        wait_for(lambda: client.hlen("runs") > 0 or client.llen("celery") < total, 30)
        time.sleep(rng.uniform(0.2, 1.2))
        worker.kill()
    workers.append(Worker(redis_url, "taskwarden", tmp_path / "storm.log", visibility=1))
    wait_for(lambda: len(runs(client)) == total, 60)
    assert set(runs(client)) == set(range(total))
    wait_for(lambda: client.llen("celery") == 0 and client.hlen("unacked") == 0, 30)


# -- the transport on its own, without a worker ------------------------------------------------

queue = Queue("plain", Exchange("plain", type="direct"), routing_key="plain")


@pytest.fixture
def connection(redis_url: str) -> Iterator[Connection]:
    with Connection(redis_url, transport=Transport) as conn:
        yield conn


def publish(conn: Connection, body: dict[str, object]) -> None:
    with conn.channel() as channel:
        Producer(channel).publish(body, exchange=queue.exchange, routing_key="plain",
                                  declare=[queue])  # fmt: skip


def publish_apart(conn: Connection, body: dict[str, object]) -> None:
    """Publish on a connection of its own (from another thread)."""
    with conn.clone() as other:
        publish(other, body)


def test_a_consumer_sees_its_message_already_recorded_as_unacked(
    connection: Connection, client: redis.Redis
) -> None:
    """The record is written with the fetch, before the consumer holds the message; an ack
    removes it. A message sent while the consumer idles wakes it promptly."""
    seen: list[tuple[object, bool]] = []

    def on_message(body: object, message: object) -> None:
        tag = message.delivery_tag  # type: ignore[attr-defined]
        seen.append((body, client.hexists("unacked", tag)))
        message.ack()  # type: ignore[attr-defined]

    with connection.channel() as channel, Consumer(channel, [queue], callbacks=[on_message]):
        sender = threading.Timer(0.5, publish_apart, args=(connection, {"n": 1}))
        sender.start()
        started = time.monotonic()
        connection.drain_events(timeout=5)
        waited = time.monotonic() - started
        sender.join()
    assert seen == [({"n": 1}, True)]
    assert waited < 2.0  # woken by the idle wait on its queue, not a long poll
    assert (client.hlen("unacked"), client.zcard("unacked_index")) == (0, 0)


def test_basic_get_records_atomically_too(connection: Connection, client: redis.Redis) -> None:
    publish(connection, {"n": 2})
    with connection.channel() as channel:
        message = channel.basic_get("plain")
        assert message is not None and message.payload == {"n": 2}
        assert client.hexists("unacked", message.delivery_tag)
        channel.basic_ack(message.delivery_tag)
        assert client.hlen("unacked") == 0
        assert channel.basic_get("plain") is None


def test_a_rejected_message_goes_back_to_its_queue(
    connection: Connection, client: redis.Redis
) -> None:
    publish(connection, {"n": 3})
    with connection.channel() as channel:
        message = channel.basic_get("plain")
        assert message is not None
        message.reject(requeue=True)
        assert (client.llen("plain"), client.hlen("unacked")) == (1, 0)
        again = channel.basic_get("plain")
        assert again is not None and again.payload == {"n": 3}
        again.ack()


@pytest.mark.parametrize(("atomic", "expected"), [(True, Transport), (False, None)])
def test_the_atomic_fetch_is_the_default_and_can_be_turned_off(
    redis_url: str, atomic: bool, expected: type | None
) -> None:
    """TASKWARDEN_ATOMIC_FETCH=false falls back to Celery's stock Redis transport (for a
    Redis-compatible server without Lua or BLMOVE)."""
    from kombu.transport.redis import Transport as StockTransport

    from taskwarden.config.settings import Settings
    from taskwarden.worker.app import create_app

    app = create_app(Settings(atomic_fetch=atomic), redis_url)
    with app.connection_for_read() as conn:
        used = type(conn.transport)
    assert used is (expected or StockTransport)
