"""A bare Celery app for tests/test_broker.py: one task that counts its runs in Redis.

Configured from the environment so a test can start real workers with either transport:
``BROKER_TEST_URL``, ``BROKER_TEST_TRANSPORT`` (``taskwarden`` or ``stock``) and
``BROKER_TEST_VISIBILITY`` (seconds).
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

url = os.environ.get("BROKER_TEST_URL", "redis://127.0.0.1:6379/0")
app = Celery("broker_test", broker=url, set_as_current=False)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("BROKER_TEST_VISIBILITY", "3600")),
        # sweep for messages past their visibility timeout every second, not every 100 s
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # a worker killed while it sweeps leaves the sweep's lock behind until this expires
        # (kombu's default: 300 s, longer than any test waits)
        "unacked_mutex_expire": 5,
    },
)
if os.environ.get("BROKER_TEST_TRANSPORT", "taskwarden") == "taskwarden":
    app.conf.broker_transport = "taskwarden.worker.broker:Transport"

_client: redis.Redis | None = None


@app.task(name="count")
def count(n: int, seconds: float = 0.0) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(url)
    time.sleep(seconds)
    _client.hincrby("runs", str(n), 1)
