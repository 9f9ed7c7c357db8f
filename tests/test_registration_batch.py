"""Bulk registration, from every door: the store's pipelined path, the service (each item
validated and dead-lettered on its own), ``POST /v1/watches:batch``, the ``taskwarden.track_many``
queue message on a real worker, and ``taskwarden track --from-file``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from taskwarden import keys, service
from taskwarden.api import create_app
from taskwarden.cli.common import ExitCode
from taskwarden.config.settings import Settings
from taskwarden.lifecycle import State
from taskwarden.models import Registration, watch_id
from taskwarden.store.watches import Store
from tests.conftest import Warden, wait_for
from tests.test_api import AUTH, serve, settings_for

SETTINGS = Settings(default_timeout=3600)
NOW = 1_800_000_000.0


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_register_many_stores_what_register_stores(store: Store) -> None:
    """A watch registered in a batch has the fields and index entries of one registered alone;
    a repeat, in the same batch or a later one, is the existing watch."""
    one = Registration(provider="geobox", remote_id="alone", labels={"team": "maps"})
    alone, _ = store.register(one, NOW, 3600)
    regs = [Registration(provider="geobox", remote_id=f"b-{i}", labels={"team": "maps"})
            for i in range(1200)]  # fmt: skip
    got = store.register_many([*regs, regs[0]], NOW, 3600, chunk=500)
    assert got[:-1] == [(watch_id("geobox", f"b-{i}"), True) for i in range(1200)]
    assert got[-1] == (watch_id("geobox", "b-0"), False)
    assert store.register_many([one], NOW, 3600) == [(alone.id, False)]
    batched = store.get(watch_id("geobox", "b-7"))
    assert batched is not None
    differ = {"id", "remote_id"}
    assert {k: v for k, v in vars(batched).items() if k not in differ} == {
        k: v for k, v in vars(alone).items() if k not in differ
    }
    assert store.counts()["pending"] == 1201
    assert store.due_count("geobox", NOW) == 1201
    assert store.counts_by_provider()["geobox"]["pending"] == 1201
    assert store.redis.zcard(keys.label("team", "maps")) == 1201
    assert [e["to"] for e in store.history(batched.id)] == ["pending"]


def test_register_many_keeps_text_as_sent(store: Store) -> None:
    """Text outside ASCII, quotes and JSON-like values pass through the batch script as they
    were sent, into the watch and its label index."""
    labels = {"équipe": "Straße ✓", "q": '"quoted" {x}', "n": "1e3"}
    reg = Registration(provider="geobox", remote_id='Ünïcode "id" ✓', labels=labels,
                       params={"a": [1, "ü"]}, timeout=12.5)  # fmt: skip
    [(wid, created)] = store.register_many([reg], NOW + 0.123456789, None)
    watch = store.get(wid)
    assert created and watch is not None
    assert (watch.remote_id, watch.labels, watch.params) == (reg.remote_id, labels, reg.params)
    assert watch.created_at == NOW + 0.123456789 and watch.deadline == NOW + 0.123456789 + 12.5
    assert store.redis.zscore(keys.label("équipe", "Straße ✓"), wid) == NOW + 0.123456789
    found, _ = store.list_watches(labels={"q": '"quoted" {x}'})
    assert [w.id for w in found] == [wid]


def test_each_item_of_a_batch_is_validated_and_dead_lettered_on_its_own(store: Store) -> None:
    """Refused items are answered at their index with their own reason and each kept in the
    dead letters; the valid ones around them are created, a repeat reads as exists."""
    items: list[object] = [
        {"provider": "geobox", "remote_id": "ok-1"},
        {"provider": "nope", "remote_id": "x"},
        "not an object",
        {"provider": "geobox", "remote_id": "ok-1"},
        {"provider": "geobox", "remote_id": "ok-2", "colour": "red"},
        {"provider": "geobox", "remote_id": "ok-3", "labels": {"k": "v"}},
    ]
    out = service.register_many(store, SETTINGS, items, source="api", now=NOW)
    assert [o.status for o in out] == ["created", "refused", "refused", "exists", "refused",
                                       "created"]  # fmt: skip
    assert out[0].watch_id == out[3].watch_id == watch_id("geobox", "ok-1")
    assert "unknown provider 'nope'" in (out[1].error or "")
    assert "JSON object" in (out[2].error or "")
    assert "colour" in (out[4].error or "")
    letters = store.dead_letters(10)
    assert [(d["source"], d["reason"]) for d in reversed(letters)] == [
        ("api", out[i].error) for i in (1, 2, 4)
    ]
    assert json.loads(letters[0]["body"]) == items[4]
    assert service.tally(out) == {"created": 2, "exists": 1, "refused": 3}


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with serve(create_app(settings_for(tmp_path), redis_url)) as client:
        yield client


def test_the_batch_endpoint_answers_per_item(api: httpx.Client, store: Store) -> None:
    """POST /v1/watches:batch answers each item at its index; it needs the token, a JSON
    array, and at most 1000 items; its answers validate against the OpenAPI document."""
    path = "/v1/watches:batch"
    body = [{"provider": "geobox", "remote_id": "a1", "labels": {"x": "1"}},
            {"provider": "geobox", "remote_id": ""},
            {"provider": "geobox", "remote_id": "a1"}]  # fmt: skip
    r = api.post(path, json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["created"], answer["exists"], answer["refused"]) == (1, 1, 1)
    wid = watch_id("geobox", "a1")
    assert answer["results"][0] == {"status": "created", "watch_id": wid}
    assert answer["results"][1]["status"] == "refused" and answer["results"][1]["error"]
    assert answer["results"][2] == {"status": "exists", "watch_id": wid}
    watch = store.get(wid)
    assert watch is not None and watch.labels == {"x": "1"} and watch.state is State.PENDING
    assert api.post(path, json=body).status_code == 401
    assert api.post(path, json={"provider": "geobox"}, headers=AUTH).status_code == 422
    too_many = [{"provider": "geobox", "remote_id": f"m-{i}"} for i in range(1001)]
    refused = api.post(path, json=too_many, headers=AUTH)
    assert refused.status_code == 422 and "at most 1000" in refused.json()["detail"]
    assert store.get(watch_id("geobox", "m-0")) is None
    spec = api.get("/openapi.json").json()["paths"][path]["post"]
    assert set(spec["responses"]) >= {"200", "401", "422"}
    assert spec["requestBody"]["content"]["application/json"]["schema"]["maxItems"] == 1000


@pytest.mark.slow
def test_track_many_through_the_queue_on_a_real_worker(warden: Warden) -> None:
    """A taskwarden.track_many message registers each valid item (watched to the end like
    any other) and dead-letters each invalid one on its own, with its reason."""
    task = warden.sim.geobox.add_task(running_seconds=0.2)
    bad = unique("bad")
    batch = [{"provider": "geobox", "remote_id": task.uuid, "archive": False},
             {"provider": "geobox", "remote_id": bad, "timeout": -1},
             *({"provider": "geobox", "remote_id": unique("many")} for _ in range(600))]  # fmt: skip
    producer = Celery(broker=warden.redis_url, set_as_current=False)
    with producer.connection_for_write() as conn:
        producer.send_task(keys.TASK_TRACK_MANY, args=[batch], connection=conn)
    final = warden.wait_final(watch_id("geobox", task.uuid), timeout=60)
    assert final.state is State.SUCCEEDED
    letter = warden.dead_letter(bad)
    assert letter["source"] == "queue" and "timeout" in letter["reason"]
    last = batch[-1]
    assert isinstance(last, dict)
    wait_for(lambda: warden.store.get(watch_id("geobox", last["remote_id"])), timeout=30)
    assert warden.store.get(watch_id("geobox", bad)) is None
    many = [watch_id("geobox", str(b["remote_id"])) for b in batch[2:] if isinstance(b, dict)]
    assert all(warden.store.get(wid) for wid in many)
    for wid in many:  # no such tasks on the simulator: spare the session's warden their polls
        warden.store.cancel(wid, time.time())


def cli(warden: Warden, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskwarden", *args],
        env={**os.environ, **warden.env},
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_track_from_a_json_lines_file_and_from_csv_on_stdin(warden: Warden, tmp_path: Path) -> None:
    """`track --from-file` reads JSON lines (a path) or CSV (stdin, '-'): it prints a
    summary and each refusal by line, --json every line's result, options apply to each item
    that does not say otherwise, and any refusal makes the exit status 2."""
    a, b = unique("fa"), unique("fb")
    lines = [json.dumps({"provider": "geobox", "remote_id": a, "labels": {"k": "own"}}), "",
             "{not json", json.dumps({"provider": "geobox", "remote_id": b})]  # fmt: skip
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = cli(warden, "track", "--from-file", str(path), "--label", "k=cli", "--label", "j=1",
              "--no-archive")  # fmt: skip
    assert out.returncode == ExitCode.INVALID, out.stderr
    assert out.stdout.strip() == "2 registered, 0 already watched, 1 refused"
    assert "line 3:" in out.stderr
    watch = warden.store.get(watch_id("geobox", a))
    assert watch is not None and watch.labels == {"k": "own", "j": "1"}
    assert watch.archive is False
    c, d = unique("fc"), unique("fd")
    table = ("provider,remote_id,labels,label.team,timeout\n"
             f"geobox,{c},a=1;b=2,maps,600\ngeobox,{d},,,\ngeobox,{a},,,\n")  # fmt: skip
    out = cli(warden, "track", "--from-file", "-", "--json", stdin=table)
    assert out.returncode == ExitCode.OK, out.stderr
    answer: dict[str, Any] = json.loads(out.stdout)
    assert (answer["created"], answer["exists"], answer["refused"]) == (2, 1, 0)
    assert [(r["line"], r["status"]) for r in answer["results"]] == [
        (2, "created"), (3, "created"), (4, "exists")
    ]  # fmt: skip
    watch = warden.store.get(watch_id("geobox", c))
    assert watch is not None
    assert watch.labels == {"a": "1", "b": "2", "team": "maps"} and watch.timeout == 600
    both = cli(warden, "track", "geobox", "x", "--from-file", str(path))
    assert both.returncode == 2 and "not both" in both.stderr
