"""Bad input and secrets: random registrations never hurt a worker; credentials never leak."""

from __future__ import annotations

import json
import random
import string
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden

SECRET_KEY = "apikey-" + uuid.uuid4().hex  # unique, so finding it anywhere means it leaked


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**70), 2**70)
    if kind == 3:
        return rng.choice([0.0, -1.5, 1e308, float("inf"), float("nan")])
    if kind == 4:
        alphabet = string.printable + "\u00e9\u4e2d\U0001f600/..\\\x00"
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 40, 3000])))
    if kind == 5:
        return rng.choice(["geobox", "..", "../x", "a/b", "", " ", "x" * 300, "GEOBOX"])
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_value(rng, 2) if rng.random() < 0.2 else rng.choice(
        ["provider", "remote_id", "params", "labels", "timeout", "archive", "abort_on_timeout", "x"]
    ): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}  # fmt: skip


def fuzz_messages(count: int, seed: int) -> list[dict[str, Any]]:
    """Registration-shaped garbage: right keys with wrong values, wrong keys, wrong shapes."""
    rng = random.Random(seed)
    messages = []
    fields = ["provider", "remote_id", "params", "labels", "timeout", "archive", "abort_on_timeout"]
    for _ in range(count):
        msg = {f: random_value(rng) for f in fields if rng.random() < 0.7}
        if rng.random() < 0.3:
            msg["provider"] = "nowhere"  # certainly invalid: an unknown provider
        messages.append(msg)
    return messages


def test_thousands_of_random_registrations_never_hurt_the_worker(warden: Warden) -> None:
    """2,000 random messages are refused or accepted without crashing any process, each refusal
    is dead-lettered, and a good registration sent after them is served normally."""
    before = warden.store.redis.xlen("taskwarden:deadletters")
    producer = Celery(broker=warden.redis_url, set_as_current=False)
    messages = fuzz_messages(2000, seed=20261122)
    sendable = 0
    with producer.connection_for_write() as conn:
        for kwargs in messages:
            try:
                json.dumps(kwargs, allow_nan=False)
            except (TypeError, ValueError):
                continue  # not expressible as a JSON message; the producer itself refuses it
            producer.send_task("taskwarden.track", kwargs=kwargs, connection=conn)
            sendable += 1
        # a message in a format the worker does not accept (pickle) is dropped, not run
        producer.send_task(
            "taskwarden.track", kwargs={"provider": "geobox"}, serializer="pickle", connection=conn
        )
    task = warden.sim.geobox.add_task(file_size=10)
    warden.send_track(provider="geobox", remote_id=task.uuid)
    assert warden.wait_final(watch_id("geobox", task.uuid), timeout=120).state is State.SUCCEEDED
    assert warden.service.alive()
    refused = warden.store.redis.xlen("taskwarden:deadletters") - before
    unknown_provider = sum(1 for m in messages if m.get("provider") == "nowhere" and _jsonable(m))
    assert sendable > 1000
    assert refused >= unknown_provider


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def test_credentials_never_appear_in_logs_errors_or_archive(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """With an API key (sent in every URL) and failures on purpose, the key appears in no log
    line, no watch record or error, no `taskwarden show` output and no archived manifest."""
    sim.geobox.configure({"apikeys": [SECRET_KEY, "sim-apikey"]})
    env = {
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "",
        "TASKWARDEN_PROVIDERS__GEOBOX__APIKEY": SECRET_KEY,
    }
    ok = sim.geobox.add_task(running_seconds=0.5, file_size=100)
    flaky = sim.geobox.add_task(running_seconds=0.5, file_size=100)
    sim.inject(kind="status", status=503, task=flaky.uuid, count=2)
    sim.inject(kind="reset", task=flaky.uuid, count=1)
    sim.inject(
        kind="truncate", task=flaky.uuid, route="files/{uuid}/download/", keep_bytes=10, count=1
    )
    missing = str(uuid.uuid4())
    with running_warden(tmp_path, sim, **env) as w:
        for remote in (ok.uuid, flaky.uuid, missing):
            w.send_track(provider="geobox", remote_id=remote)
        states = {
            r: w.wait_final(watch_id("geobox", r), timeout=60).state
            for r in (ok.uuid, flaky.uuid, missing)
        }
        shown = [
            w.cli("show", watch_id("geobox", r), "--json").stdout
            for r in (ok.uuid, flaky.uuid, missing)
        ]
        listed = w.cli("ls", "--json").stdout
        records = [
            json.dumps(w.store.redis.hgetall(k))
            for k in w.store.redis.keys("taskwarden:*")
            if w.store.redis.type(k) == "hash"
        ]
    assert states == {ok.uuid: State.SUCCEEDED, flaky.uuid: State.SUCCEEDED, missing: State.ERROR}
    places = {p.name: p.read_text(errors="replace") for p in (tmp_path / "logs").iterdir()}
    places |= {
        f"manifest {p.parent.name}": p.read_text()
        for p in (tmp_path / "archive").rglob("manifest.json")
    }
    places |= {"show": "\n".join(shown), "ls": listed, "redis hashes": "\n".join(records)}
    assert sum("poll.done" in text for text in places.values()) >= 1  # the logs were captured
    for name, text in places.items():
        assert SECRET_KEY not in text, f"the API key leaked into {name}"
