"""What cannot become a watch is dead-lettered with its reason: targets a provider refuses at
registration, and messages Celery cannot decode or has no task for."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Exchange, Queue

from taskwarden import metrics
from taskwarden.config.providers import (
    GenericHttpSettings,
    GenericProfile,
    IsahitSettings,
    ProvidersSettings,
)
from taskwarden.config.settings import Settings
from taskwarden.errors import InvalidRegistration
from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.redis_server import RedisServer
from taskwarden.service import registration
from taskwarden.simulator.generic import profile as generic_profile
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store

from .conftest import Warden, running_warden, wait_for, warden_env

SETTINGS = Settings(
    providers=ProvidersSettings(
        http=GenericHttpSettings(
            profiles={"acme": GenericProfile.model_validate(generic_profile("http://acme.test/"))}
        ),
        isahit=IsahitSettings(project_id=None),
    )
)


@pytest.mark.parametrize(
    ("provider", "remote_id", "params", "reason"),
    [
        ("http", "ghost:42", {"project": "p"}, "no http profile 'ghost'"),
        ("http", "acme:42", {}, "status_url needs {project}"),
        ("http", "42", {}, "'<profile>:<task id>'"),
        ("http", "acme:42", {"project": "p", "spec": {}}, "ALLOW_INLINE_SPECS"),
        ("isahit", "t1", {}, "params.project_id"),
        ("isahit", "b1", {"kind": "batch"}, "params.project_id"),
        ("isahit", "t1", {"project_id": "p", "kind": "lot"}, "'task' or 'batch'"),
        ("isahit", "t1", {"project_id": "p", "optional_fields": ["x"]}, "optional_fields"),
        ("up42", "j1", {"project": "typo"}, "unknown up42 params ['project']"),
        ("up42", "j1", {"job_id": "j"}, "needs project_id"),
        ("up42", "j1", {"project_id": ""}, "non-empty string"),
        ("descarteslabs", "p1", {"kind": "move"}, "params.kind must be one of"),
        ("descarteslabs", "e1", {"kind": "export"}, "needs params.product_id"),
        ("descarteslabs", "p1", {"kind": "copy", "product_id": "a/b"}, "product id"),
    ],
)
def test_a_target_its_provider_refuses_is_dead_lettered(
    store: Store, provider: str, remote_id: str, params: dict[str, Any], reason: str
) -> None:
    """The provider's check runs at registration: refused, dead-lettered, no watch."""
    data = {"provider": provider, "remote_id": remote_id, "params": params}
    with pytest.raises(InvalidRegistration, match="refuses this task") as caught:
        registration.register(store, SETTINGS, data, source="api")
    assert reason in str(caught.value)
    letter = store.dead_letters(1)[0]
    assert (letter["source"], letter["reason"]) == ("api", str(caught.value))
    assert json.loads(letter["body"]) == data
    assert store.get(watch_id(provider, remote_id)) is None


@pytest.mark.parametrize(
    ("provider", "remote_id", "params"),
    [
        ("geobox", "anything", {}),
        ("http", "acme:42", {"project": "p"}),
        ("isahit", "t1", {"project_id": "p"}),
        ("up42", "j1", {"project_id": "p"}),
        ("up42", "j1", {}),
        ("descarteslabs", "p1", {"kind": "copy"}),
    ],
)
def test_a_target_its_provider_accepts_becomes_a_watch(
    store: Store, provider: str, remote_id: str, params: dict[str, Any]
) -> None:
    """Good targets pass every provider's check."""
    remote_id = f"{remote_id}-{uuid.uuid4().hex[:8]}"
    data = {"provider": provider, "remote_id": remote_id, "params": params}
    watch, created = registration.register(store, SETTINGS, data, source="cli")
    assert created and watch.state is State.PENDING


# -- messages Celery cannot run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer) -> Iterator[Warden]:
    with running_warden(tmp_path_factory.mktemp("deadletters"), sim) as w:
        yield w


def _publish(w: Warden, body: bytes, content_type: str, headers: dict[str, Any]) -> None:
    producer = Celery(broker=w.redis_url, set_as_current=False)
    exchange = Exchange("celery", type="direct")
    with producer.connection_for_write() as conn:
        conn.Producer().publish(
            body,
            exchange=exchange,
            routing_key="celery",
            declare=[Queue("celery", exchange, "celery")],
            content_type=content_type,
            content_encoding="utf-8" if not content_type.endswith("serialize") else "binary",
            headers=headers,
        )


def _task_headers(name: str) -> dict[str, Any]:
    return {"task": name, "id": str(uuid.uuid4()), "lang": "py", "argsrepr": "", "kwargsrepr": ""}


def test_messages_celery_cannot_run_are_dead_lettered_and_the_worker_goes_on(
    warden: Warden,
) -> None:
    """Non-JSON, an unknown content type, pickle, an unknown task and a message naming no task
    each appear in `taskwarden deadletters` with a clear reason; a good registration sent
    afterwards is served."""
    marker = uuid.uuid4().hex
    _publish(
        warden,
        b"{not json " + marker.encode(),
        "application/json",
        _task_headers("taskwarden.track"),
    )
    _publish(
        warden, f"a: {marker}".encode(), "application/x-yaml", _task_headers("taskwarden.track")
    )
    producer = Celery(broker=warden.redis_url, set_as_current=False)
    with producer.connection_for_write() as conn:
        producer.send_task(
            "taskwarden.track",
            kwargs={"provider": "geobox", "remote_id": f"pickled-{marker}"},
            serializer="pickle",
            connection=conn,
        )
        producer.send_task(
            "taskwarden.nope", kwargs={"remote_id": f"unknown-{marker}"}, connection=conn
        )
    _publish(
        warden, json.dumps({"remote_id": f"taskless-{marker}"}).encode(), "application/json", {}
    )

    def letters() -> list[dict[str, Any]] | None:
        mine = [d for d in warden.store.dead_letters(200) if marker in d["body"]]
        return mine if len(mine) >= 5 else None

    reasons = sorted(d["reason"] for d in wait_for(letters, timeout=60))
    text = "\n".join(reasons)
    assert "undecodable message (application/json)" in text
    assert "application/x-yaml" in text
    assert "application/x-python-serialize" in text
    assert "unknown task 'taskwarden.nope'; this worker runs" in text
    assert "not a Celery task message" in text
    assert all(
        d["source"] == "queue" for d in warden.store.dead_letters(200) if marker in d["body"]
    )

    out = warden.cli("deadletters", "--limit", "200")
    assert out.returncode == 0, out.stderr
    assert "unknown task 'taskwarden.nope'" in out.stdout

    task = warden.sim.geobox.add_task(file_size=10)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    assert warden.wait_final(watch_id("geobox", task.uuid), timeout=60).state is State.SUCCEEDED
    assert warden.store.get(watch_id("geobox", f"pickled-{marker}")) is None
    assert warden.service.alive()


def test_text_pushed_onto_a_queue_is_dead_lettered_and_stops_no_worker(warden: Warden) -> None:
    """Items that are no Celery message at all, pushed onto the queue a producer sends to (a raw
    LPUSH): each is dead-lettered with the reason, the worker is not restarted (Celery's stock
    Redis transport stops it on the first one), and a good registration is served afterwards."""
    marker = uuid.uuid4().hex
    envelope = {  # kombu's shape, but a body that is not the base64 it claims
        "body": f"{marker}x",  # 33 base64 characters: incorrect padding
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {
            "delivery_tag": marker,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": "celery"},
        },
    }
    items = [
        f"not json {marker}",
        json.dumps({"provider": "geobox", "remote_id": f"raw-{marker}"}),
        json.dumps([marker]),
        json.dumps(envelope),
    ]
    restarts = dict(warden.service.restarts)
    counted = int(warden.store.metric_cells().get(metrics.dead_letter_field("queue"), 0))
    warden.store.redis.lpush("celery", *items)

    def letters() -> list[dict[str, Any]] | None:
        mine = [d for d in warden.store.dead_letters(200) if marker in d["body"]]
        return mine if len(mine) >= len(items) else None

    found = wait_for(letters, timeout=60)
    assert all("not a Celery message" in d["reason"] for d in found), found
    assert {d["source"] for d in found} == {"queue"}
    # each counted for /metrics in the same step as it was kept (taskwarden_dead_letters_total)
    cells = warden.store.metric_cells()
    assert int(cells[metrics.dead_letter_field("queue")]) == counted + len(items)
    assert warden.store.redis.hlen("unacked") == 0 or not any(
        marker in str(v) for v in warden.store.redis.hvals("unacked")
    )

    task = warden.sim.geobox.add_task(file_size=10)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    assert warden.wait_final(watch_id("geobox", task.uuid), timeout=60).state is State.SUCCEEDED
    assert dict(warden.service.restarts) == restarts


def _envelope(body: Any, headers: dict[str, Any], marker: str) -> str:
    """A kombu envelope as a producer's LPUSH leaves it on the queue: ``body`` as JSON."""
    encoded = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps({
        "body": encoded,
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": headers,
        "properties": {
            "delivery_tag": f"{marker}-{uuid.uuid4().hex}",
            "body_encoding": "base64",
            "delivery_mode": 2,
            "priority": 0,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
        },
    })  # fmt: skip


def test_task_messages_celery_cannot_build_are_dead_lettered_and_stop_no_worker(
    warden: Warden,
) -> None:
    """Envelopes Celery's Request cannot be built from or run (a task header that is a list or an
    object, a JSON body that is not [args, kwargs, embed], no task id, a time limit that is no
    pair), pushed raw onto the queue:
    each is dead-lettered with the reason, the worker is not restarted (Celery stops on them,
    "Unrecoverable error"), and a good registration is served afterwards."""
    marker = uuid.uuid4().hex
    kwargs = {"provider": "geobox", "remote_id": f"shaped-{marker}"}
    good = [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    shapes = [
        (good, {**_task_headers("taskwarden.track"), "task": ["taskwarden.track"]},
         "the task header is a list, not a task name"),
        (good, {**_task_headers("taskwarden.track"), "task": {"name": "taskwarden.track"}},
         "the task header is a dict, not a task name"),
        (kwargs, _task_headers("taskwarden.track"), "is a JSON object, not Celery's"),
        ([[], kwargs], _task_headers("taskwarden.track"), "is a 2-item list, not Celery's"),
        (f"text {marker}", _task_headers("taskwarden.track"), "is a JSON string, not Celery's"),
        ([[], [kwargs], None], _task_headers("taskwarden.track"), "the kwargs are a JSON list"),
        (good, {k: v for k, v in _task_headers("taskwarden.track").items() if k != "id"},
         "without a string id header"),
        (good, {**_task_headers("taskwarden.track"), "timelimit": "xyz"},
         "with a timelimit header of 'xyz': Celery wants [soft, hard]"),
    ]  # fmt: skip
    restarts = dict(warden.service.restarts)
    warden.store.redis.lpush("celery", *(_envelope(b, h, marker) for b, h, _ in shapes))

    def letters() -> list[dict[str, Any]] | None:
        mine = [d for d in warden.store.dead_letters(200) if marker in d["body"]]
        return mine if len(mine) >= len(shapes) else None

    found = wait_for(letters, timeout=60)
    reasons = "\n".join(d["reason"] for d in found)
    for _, _, reason in shapes:
        assert reason in reasons, reasons
    assert {d["source"] for d in found} == {"queue"}
    assert not any(marker in str(v) for v in warden.store.redis.hvals("unacked"))
    assert warden.store.get(watch_id("geobox", f"shaped-{marker}")) is None

    task = warden.sim.geobox.add_task(file_size=10)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    assert warden.wait_final(watch_id("geobox", task.uuid), timeout=60).state is State.SUCCEEDED
    assert dict(warden.service.restarts) == restarts


def test_a_redis_out_of_memory_is_waited_out_by_the_worker(warden: Warden) -> None:
    """Redis at maxmemory refuses the worker's fetch (OutOfMemoryError): the worker logs it and
    waits, is not restarted, and serves a registration once Redis has memory again."""
    restarts = dict(warden.service.restarts)
    assert warden.service.log_dir is not None
    log = warden.service.log_dir / "poll.log"
    seen = log.read_text().count("broker.out_of_memory")
    redis = warden.store.redis
    redis.config_set("maxmemory", "1")  # below what it uses: every write that may grow is refused
    try:
        wait_for(lambda: log.read_text().count("broker.out_of_memory") >= seen + 3, timeout=60)
    finally:
        redis.config_set("maxmemory", "0")
    task = warden.sim.geobox.add_task(file_size=10)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    assert warden.wait_final(watch_id("geobox", task.uuid), timeout=60).state is State.SUCCEEDED
    assert dict(warden.service.restarts) == restarts
    assert "Unrecoverable error" not in log.read_text()


def test_a_standalone_worker_that_meets_an_unrecoverable_error_exits_non_zero(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """`taskwarden worker` without a supervisor, on a queue key that is not a list (Redis answers
    WRONGTYPE, which no worker can go on from): Celery logs "Unrecoverable error" and the
    process exits non-zero, so that `restart: on-failure` brings it back."""
    with RedisServer(tmp_path / "redis", persist=False) as server:
        Store.from_url(server.url).redis.set("celery", "not a list")
        env = {**os.environ, **warden_env(server.url, sim, tmp_path / "data")}
        env["TASKWARDEN_ARCHIVE_URL"] = (tmp_path / "archive").as_uri()
        proc = subprocess.run(
            [sys.executable, "-m", "taskwarden", "worker", "-Q", "celery", "-c", "1"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert "Unrecoverable error" in proc.stderr + proc.stdout
    assert proc.returncode != 0
