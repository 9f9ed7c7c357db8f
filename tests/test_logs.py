"""Logging: JSON lines off a terminal, and no configured secret ever printed."""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from taskwarden import keys, logs
from taskwarden.config.settings import load_settings
from taskwarden.lifecycle import State
from taskwarden.models import Watch, watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer, free_port
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store import Store

from .conftest import wait_for, warden_env


def test_secrets_are_redacted_from_every_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token, an S3 key and the Redis password are masked in structlog and stdlib records."""
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__GEOBOX__TOKEN", "tok-123456789")
    monkeypatch.setenv("TASKWARDEN_S3__SECRET_ACCESS_KEY", "s3-secret-abcdef")
    monkeypatch.setenv("TASKWARDEN_REDIS_URL", "redis://:redis-pass-xyz@127.0.0.1:6379/0")
    settings = load_settings()
    assert set(logs.secrets_of(settings)) == {"tok-123456789", "s3-secret-abcdef", "redis-pass-xyz"}
    out = io.StringIO()
    logs.configure(settings, stream=out)
    logs.get("t").info(
        "poll.done", error="401 for token tok-123456789", url="redis://:redis-pass-xyz@h"
    )
    logging.getLogger("some.library").warning("connecting with %s", "s3-secret-abcdef")
    logging.getLogger("httpx").info("HTTP Request: GET https://x/?apikey=tok-123456789")
    text = out.getvalue()
    assert (
        "tok-123456789" not in text
        and "s3-secret-abcdef" not in text
        and "redis-pass-xyz" not in text
    )
    event = json.loads(text.splitlines()[0])
    assert event["event"] == "poll.done" and event["error"] == "401 for token ***"
    assert "connecting with ***" in text
    assert "HTTP Request" not in text  # httpx's per-request INFO lines are silenced


@pytest.mark.parametrize(
    ("level", "dispatch", "poll"),
    [("info", None, "info"), ("debug", "debug", "info"), ("warning", None, None)],
)
def test_the_dispatch_task_lines_are_debug(
    monkeypatch: pytest.MonkeyPatch, level: str, dispatch: str | None, poll: str | None
) -> None:
    """Celery's per-task lines for the every-second dispatch task come out at debug (or not at
    all above it); another task's stay at info. Both are JSON, with the logger's name."""
    monkeypatch.setenv("TASKWARDEN_LOG_LEVEL", level)
    monkeypatch.setenv("TASKWARDEN_LOG_FORMAT", "json")
    out = io.StringIO()
    logs.configure(load_settings(), stream=out)
    trace = logging.getLogger("celery.app.trace")
    trace.info("Task %s[%s] succeeded in 0.01s: {}", keys.TASK_DISPATCH, "id-1")
    trace.info("Task %s[%s] succeeded in 0.01s: {}", keys.TASK_POLL, "id-2")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    levels = {e["event"].split("[")[0].removeprefix("Task "): e["level"] for e in events}
    assert levels.get(keys.TASK_DISPATCH) == dispatch and levels.get(keys.TASK_POLL) == poll
    assert all(e["logger"] == "celery.app.trace" for e in events)


# --- a whole warden's output ------------------------------------------------------------------

TOKEN = "log-test-token-0123456789"


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's captured stdout and stderr, each parsed as one JSON object."""
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line!r}") from None
        assert isinstance(event, dict), f"{path.name}:{number} is no JSON object: {line!r}"
        events.append(event)
    return events


@pytest.mark.slow
def test_a_warden_run_writes_json_lines_only(tmp_path: Path, sim: SimulatorServer) -> None:
    """Beat, workers and the API, with watches succeeding and failing and a message
    dead-lettered: every line they print is JSON (Celery's and kombu's own records included),
    the per-tick dispatch task lines stay below info, a give-up logs at warning or above, a
    poll and an archive summary keep their fields, and each API request has one access line
    without the token."""
    port = free_port()
    good = sim.geobox.add_tasks([{"running_seconds": 0.3, "file_size": 100} for _ in range(2)])
    bad = sim.geobox.add_task(running_seconds=0.3, outcome="failure")
    gone = "log-missing-" + uuid.uuid4().hex
    with RedisServer(tmp_path / "redis", persist=False) as server:
        env = warden_env(server.url, sim, tmp_path / "data",
                         TASKWARDEN_ARCHIVE_URL=(tmp_path / "archive").as_uri(),
                         TASKWARDEN_API__PORT=str(port), TASKWARDEN_API__TOKEN=TOKEN,
                         TASKWARDEN_RETRY__MAXIMUM_ATTEMPTS="2")  # fmt: skip
        store = Store.from_url(server.url)
        producer = Celery(broker=server.url, set_as_current=False)
        try:
            with Service(env, poll_concurrency=1, archive_concurrency=1, api=True,
                         log_dir=tmp_path / "logs"):  # fmt: skip
                wait_for(lambda: store.last_heartbeat("dispatch"), timeout=60)
                with producer.connection_for_write() as conn:
                    for task in [*good, bad]:
                        producer.send_task(keys.TASK_TRACK, connection=conn,
                                           kwargs={"provider": "geobox", "remote_id": task.uuid})  # fmt: skip
                    producer.send_task(keys.TASK_TRACK, connection=conn,
                                       kwargs={"provider": "geobox", "remote_id": gone})  # fmt: skip
                store.redis.lpush(keys.QUEUE_DEFAULT, "no celery message at all")
                ids = [watch_id("geobox", t.uuid) for t in [*good, bad]]
                ids.append(watch_id("geobox", gone))
                finals = {
                    wid: wait_for(lambda wid=wid: _final(store, wid), timeout=60) for wid in ids
                }
                wait_for(lambda: store.dead_letters(), timeout=30)
                api = f"http://127.0.0.1:{port}"
                auth = {"Authorization": f"Bearer {TOKEN}"}
                wait_for(lambda: _answers(f"{api}/healthz"), timeout=60, every=0.2)
                r = httpx.get(f"{api}/v1/watches", params={"token": TOKEN, "limit": 5},
                              headers=auth)  # fmt: skip
                assert r.status_code == 200
                assert httpx.get(f"{api}/v1/watches/nosuch", headers=auth).status_code == 404
                assert httpx.post(f"{api}/v1/watches", json={}).status_code == 401
        finally:
            store.redis.close()

    states = [f.state for f in finals.values()]
    assert states.count(State.SUCCEEDED) == 2 and states.count(State.FAILED) == 1
    assert states.count(State.ERROR) == 1
    by_role = {role: _lines(tmp_path / "logs" / f"{role}.log") for role in
               ("beat", "control", "poll", "archive", "api")}  # fmt: skip
    every = [e for events in by_role.values() for e in events]
    assert all("event" in e and "level" in e and "timestamp" in e for e in every)
    text = "\n".join(json.dumps(e) for e in every)
    assert TOKEN not in text
    # Celery's own records came through the same formatter (the worker says it is ready)
    assert any(e.get("logger", "").startswith("celery") for e in by_role["poll"])
    # the dispatch task's per-tick lines are debug, so an info run has none
    assert not [e for e in every if keys.TASK_DISPATCH + "[" in str(e.get("event"))]
    summaries = [e for e in by_role["poll"] if e["event"] == "poll.done"]
    assert summaries and all({"watch_id", "provider", "state"} <= set(e) for e in summaries)
    archived = [e for e in by_role["archive"] if e["event"] == "archive.done"]
    assert len(archived) == 2 and all("bytes" in e and "duration_ms" in e for e in archived)
    # a watch that gave up and a message dead-lettered are warnings or errors, not info
    noisy = [e for e in every if e["level"] in ("warning", "error", "critical")]
    assert any(e.get("watch_id") == watch_id("geobox", gone) for e in noisy)
    assert any("dead" in e["event"] for e in noisy)
    access = [e for e in by_role["api"] if e["event"] == "http.request"]
    seen = {(e["method"], e["path"], e["status"]) for e in access}
    assert {("GET", "/v1/watches", 200), ("GET", "/v1/watches/nosuch", 404),
            ("POST", "/v1/watches", 401)} <= seen  # fmt: skip
    assert all(isinstance(e["duration_ms"], int | float) for e in access)


def _final(store: Store, wid: str) -> Watch | None:
    watch = store.get(wid)
    return watch if watch is not None and watch.state.final else None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False
