"""The HTTP API on a real uvicorn server and a real Redis: every endpoint, its auth, its refusals,
pagination, server-sent events, readiness with reasons, and an OpenAPI document that matches
what the server does. The last tests run a whole warden whose `run` includes the API."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from taskwarden import api_token, keys
from taskwarden.api import create_app
from taskwarden.circuit import Circuit, CircuitPolicy, observe
from taskwarden.config.settings import Settings, load_settings
from taskwarden.lifecycle import Decision, Observation, Remote, State
from taskwarden.models import Registration, observed_fields, watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Commit, Store
from tests.conftest import wait_for, warden_env

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(tmp: Path, **api: Any) -> Settings:
    return load_settings(
        data_dir=tmp, archive_url=(tmp / "archive").as_uri(), api={"token": TOKEN, **api}
    )


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: FastAPI) -> Iterator[httpx.Client]:
    """``app`` served by uvicorn on a free loopback port, and a client of it."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=1))
    sock = free_socket()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def base_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API on the session Redis (heartbeats of server-sent events every 0.5 s, so that a
    test sees one soon)."""
    app = create_app(
        settings_for(tmp_path_factory.mktemp("api")), redis_server.url, sse_heartbeat=0.5
    )
    with serve(app) as client:
        yield str(client.base_url).rstrip("/")


@pytest.fixture
def http(base_url: str, redis_url: str) -> Iterator[httpx.Client]:
    """A client of the module's server; the Redis is emptied before each test."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def track(http: httpx.Client, remote_id: str, **fields: Any) -> httpx.Response:
    body = {"provider": "geobox", "remote_id": remote_id, **fields}
    return http.post("/v1/watches", json=body, headers=AUTH)


def to_state(store: Store, wid: str, state: State, now: float | None = None) -> None:
    now = time.time() if now is None else now
    store.redis.zadd(keys.due("geobox"), {wid: 0})
    claim = next(c for c in store.claim_due("geobox", now, 1000, now + 60) if c.watch_id == wid)
    decision = Decision(state, state.upper(), None, 1.0, 0, None if state.final else now + 600,
                        note=f"to {state}", last_error="boom" if state is State.ERROR else None)  # fmt: skip
    previous = store.get(wid).state  # type: ignore[union-attr]
    assert store.commit(Commit(claim, decision, now, previous=previous))


FACTS = Observation(Remote.RUNNING, "running", remote_created_at=1_700_000_000.5,
                    remote_started_at=1_700_000_060.0, details={"exit_code": None, "runtime": 12,
                    "statistics": {"cpu": {"total": 1.5}}})  # fmt: skip


def to_archiving_with_facts(store: Store, wid: str) -> None:
    """The watch as a poll leaves a failure of an archive="final" watch: archiving towards
    failed, with what the platform reported of the task."""
    now = time.time()
    store.redis.zadd(keys.due("geobox"), {wid: 0})
    claim = next(c for c in store.claim_due("geobox", now, 1000, now + 60) if c.watch_id == wid)
    decision = Decision(State.ARCHIVING, "FAILURE", None, None, 0, None, note="remote FAILURE",
                        last_error="boom", outcome=State.FAILED)  # fmt: skip
    previous = store.get(wid).state  # type: ignore[union-attr]
    assert store.commit(Commit(claim, decision, now, previous=previous,
                               extra=observed_fields(FACTS)))  # fmt: skip


# auth


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, "wrong bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "missing bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong bearer token"),
    ],
)
def test_writes_need_the_token(http: httpx.Client, headers: dict[str, str], reason: str) -> None:
    """Every write without the right bearer token is refused with 401 and a Bearer challenge,
    and changes nothing."""
    wid = watch_id("geobox", "t1")
    for method, path in [("POST", "/v1/watches"), ("POST", f"/v1/watches/{wid}/cancel"),
                         ("POST", f"/v1/watches/{wid}/retry")]:  # fmt: skip
        r = http.request(method, path, json={"provider": "geobox", "remote_id": "t1"},
                         headers=headers)  # fmt: skip
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"detail": reason}
    assert http.get(f"/v1/watches/{wid}").status_code == 404  # nothing was registered


def test_reads_are_open_unless_read_auth(redis_url: str, tmp_path: Path) -> None:
    """With READ_AUTH every read needs the token too; health, readiness and the page do not."""
    app = create_app(settings_for(tmp_path, read_auth=True), redis_url)
    with serve(app) as client:
        for path in ("/v1/watches", "/v1/watches/x", "/v1/stats", "/v1/events", "/metrics"):
            r = client.get(path)
            assert (r.status_code, r.json()) == (401, {"detail": "missing bearer token"}), path
        assert client.get("/v1/watches", headers=AUTH).status_code == 200
        assert client.get("/v1/stats", headers=AUTH).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503  # open, and honest: nothing runs
        assert client.get("/").status_code == 200


def test_a_token_is_generated_once_with_private_permissions(tmp_path: Path) -> None:
    """Without a token setting, the first start writes one (mode 0600) that later starts and the
    client read back."""
    settings = load_settings(data_dir=tmp_path / "data", api={"token": ""})
    assert api_token.load(settings) is None
    token = api_token.load_or_create(settings)
    assert len(token) >= 32
    assert api_token.load_or_create(settings) == api_token.load(settings) == token
    mode = stat.S_IMODE(os.stat(api_token.path(settings)).st_mode)
    assert mode == 0o600
    assert list((tmp_path / "data").iterdir()) == [api_token.path(settings)]


# registering and reading


def test_register_is_idempotent_and_refusals_say_why(http: httpx.Client, store: Store) -> None:
    """A registration creates the watch (201), a repeat returns it (200), and bad input gets a
    422 naming the problem, kept in the dead letters as coming from the API."""
    first = track(http, "t1", labels={"team": "a"})
    assert first.status_code == 201
    assert first.json()["created"] is True
    assert first.json()["watch"]["id"] == watch_id("geobox", "t1")
    assert first.json()["watch"]["state"] == "pending"
    again = track(http, "t1")
    assert (again.status_code, again.json()["created"]) == (200, False)
    bad = track(http, "t/2")
    assert bad.status_code == 422
    assert "remote_id must not contain '/'" in bad.json()["detail"]
    unknown = http.post("/v1/watches", json={"provider": "nope", "remote_id": "x"}, headers=AUTH)
    assert "unknown provider 'nope'" in unknown.json()["detail"]
    not_json = http.post("/v1/watches", content=b"{", headers=AUTH)
    assert (not_json.status_code, not_json.json()) == (422, {"detail": "body: not JSON"})
    listed = http.post("/v1/watches", json=["geobox", "x"], headers=AUTH)
    assert "a registration is a JSON object" in listed.json()["detail"]
    assert [d["source"] for d in store.dead_letters()] == ["api", "api", "api"]


def test_get_by_id_or_provider_and_remote_id_with_history(http: httpx.Client, store: Store) -> None:
    """A watch is found by its id or by provider:remote_id, with its history oldest first; an
    unknown one is a 404 that names it."""
    wid = track(http, "t1").json()["watch"]["id"]
    to_state(store, wid, State.RUNNING)
    by_id = http.get(f"/v1/watches/{wid}").json()
    assert by_id == http.get("/v1/watches/geobox:t1").json()
    assert by_id["state"] == "running"
    assert [(h["from"], h["to"]) for h in by_id["history"]] == [
        (None, "pending"), ("pending", "running")
    ]  # fmt: skip
    missing = http.get("/v1/watches/geobox:nope")
    assert (missing.status_code, missing.json()) == (404, {"detail": "no watch 'geobox:nope'"})


def test_a_watch_shows_its_archive_mode_outcome_and_the_platforms_record(
    http: httpx.Client, store: Store
) -> None:
    """The archive mode given at registration ("final", true read as "success"), the state an
    archiving watch lands on, and the platform's times and details are in the watch and the
    list; an archive mode the API does not take is a 422 naming the field."""
    wid = track(http, "t1", archive="final").json()["watch"]["id"]
    assert track(http, "t2", archive=True).json()["watch"]["archive"] == "success"
    assert track(http, "t3", archive=False).json()["watch"]["archive"] is False
    to_archiving_with_facts(store, wid)
    got = http.get(f"/v1/watches/{wid}").json()
    assert (got["archive"], got["state"], got["outcome"]) == ("final", "archiving", "failed")
    assert (got["remote_created_at"], got["remote_started_at"], got["remote_ended_at"]) == (
        1_700_000_000.5, 1_700_000_060.0, None
    )  # fmt: skip
    assert got["details"] == {"exit_code": None, "runtime": 12,
                              "statistics": {"cpu": {"total": 1.5}}}  # fmt: skip
    listed = {w["id"]: w for w in http.get("/v1/watches").json()["items"]}
    assert {k: listed[wid][k] for k in ("outcome", "details", "remote_started_at")} == {
        k: got[k] for k in ("outcome", "details", "remote_started_at")
    }
    bad = track(http, "t4", archive="none")
    assert bad.status_code == 422
    assert 'archive: Value error, must be "success", "final" or false' in bad.json()["detail"]


def test_list_filters_sorts_and_pages(http: httpx.Client, store: Store) -> None:
    """The list endpoint applies every filter and follows cursors to the end."""
    now = time.time()
    for i in range(12):
        labels = {"team": "a" if i % 2 else "b"}
        store.register(
            Registration(provider="geobox", remote_id=f"task-{i:02d}", labels=labels),
            now + i,
        )
    to_state(store, watch_id("geobox", "task-03"), State.RUNNING, now + 100)

    def remote_ids(**params: Any) -> list[str]:
        out, cursor = [], None
        while True:
            page = http.get(
                "/v1/watches", params={**params, "cursor": cursor} if cursor else params
            )
            assert page.status_code == 200, page.text
            out += [w["remote_id"] for w in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return out

    newest_first = [f"task-{i:02d}" for i in reversed(range(12))]
    assert remote_ids(limit=5) == newest_first
    assert remote_ids(sort="created_at", limit=5) == newest_first[::-1]
    assert remote_ids(state="running") == ["task-03"]
    assert remote_ids(label="team=a", limit=2) == [r for r in newest_first if int(r[-2:]) % 2]
    assert remote_ids(label=["team=a", "team=a"]) == remote_ids(label="team=a")
    # one key with two values: no watch has both (the document's label filters allow it)
    twice = http.get("/v1/watches", params={"label": ["team=a", "team=b"]})
    assert (twice.status_code, twice.json()) == (200, {"items": [], "next_cursor": None})
    assert remote_ids(q="K-1", provider="geobox") == ["task-11", "task-10"]
    assert remote_ids(created_after=now + 10) == ["task-11", "task-10"]
    assert remote_ids(created_before=now + 2, sort="created_at") == ["task-00", "task-01"]
    assert remote_ids(sort="-updated_at", limit=1)[0] == "task-03"
    assert remote_ids(updated_after=now + 50) == ["task-03"]
    assert remote_ids(provider="up42") == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"limit": 501}, "limit: Input should be less than or equal to 500"),
        ({"state": "done"}, "state: Input should be 'pending'"),
        ({"sort": "name"}, "sort: Input should be 'created_at'"),
        ({"label": "team"}, "label: 'team' is not key=value"),
        ({"created_after": "yesterday"}, "created_after: Input should be a valid number"),
        ({"cursor": "garbage"}, "cursor is not one this server returned"),
    ],
)
def test_bad_list_queries_get_422_with_the_reason(
    http: httpx.Client, params: dict[str, Any], reason: str
) -> None:
    """Each bad filter is refused with a sentence that names it."""
    r = http.get("/v1/watches", params=params)
    assert r.status_code == 422
    assert reason in r.json()["detail"]


def test_pages_are_stable_while_watches_arrive_and_cursors_keep_to_their_query(
    http: httpx.Client,
) -> None:
    """New registrations between pages neither repeat nor hide listed watches; a cursor used
    with other filters is refused."""
    for i in range(9):
        track(http, f"old-{i}")
    seen, cursor, n = [], None, 0
    while True:
        page = http.get(
            "/v1/watches", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        seen += [w["remote_id"] for w in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        track(http, f"new-{n}")
        n += 1
        if cursor is None:
            break
    assert seen == [f"old-{i}" for i in reversed(range(9))]
    cursor = http.get("/v1/watches", params={"limit": 1}).json()["next_cursor"]
    other = http.get("/v1/watches", params={"limit": 1, "cursor": cursor, "state": "running"})
    assert other.status_code == 422
    assert "cursor belongs to a query with other filters" in other.json()["detail"]


# changing


def test_cancel_and_abort(http: httpx.Client, store: Store) -> None:
    """Cancel ends a live watch (cancelled: true), is a no-op on an ended one (false), 404s on an
    unknown one; with abort it queues the abort task for the workers, by name."""
    wid = track(http, "t1").json()["watch"]["id"]
    r = http.post(f"/v1/watches/{wid}/cancel", headers=AUTH)
    assert r.status_code == 200
    assert (r.json()["cancelled"], r.json()["watch"]["state"]) == (True, "cancelled")
    again = http.post(f"/v1/watches/{wid}/cancel", headers=AUTH)
    assert (again.status_code, again.json()["cancelled"]) == (200, False)
    ended = http.post(f"/v1/watches/{wid}/cancel", json={"abort": True}, headers=AUTH)
    assert ended.status_code == 409
    assert ended.json()["detail"] == f"watch {wid} had already ended (cancelled); no abort was sent"
    assert store.redis.llen(keys.QUEUE_POLL) == 0
    live = track(http, "t2").json()["watch"]["id"]
    aborted = http.post(f"/v1/watches/{live}/cancel", json={"abort": True}, headers=AUTH)
    assert (aborted.status_code, aborted.json()["cancelled"]) == (200, True)
    queued = [json.loads(m) for m in store.redis.lrange(keys.QUEUE_POLL, 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in queued] == [
        (keys.TASK_ABORT, repr([live]))
    ]
    assert http.post("/v1/watches/geobox:zz/cancel", headers=AUTH).status_code == 404
    bad = http.post(f"/v1/watches/{wid}/cancel", json={"abort": "maybe"}, headers=AUTH)
    assert bad.status_code == 422
    assert "abort: Input should be a valid boolean" in bad.json()["detail"]


def test_retry_rearms_only_error_and_timed_out(http: httpx.Client, store: Store) -> None:
    """Retry re-arms an error watch (pending, due now); a live watch is a 409 saying its state;
    an unknown one a 404."""
    wid = track(http, "t1").json()["watch"]["id"]
    conflict = http.post(f"/v1/watches/{wid}/retry", headers=AUTH)
    assert conflict.status_code == 409
    assert conflict.json()["detail"].startswith(f"watch {wid} is pending; only error or timed_out")
    to_state(store, wid, State.ERROR)
    r = http.post(f"/v1/watches/{wid}/retry", headers=AUTH)
    assert r.status_code == 200
    assert (r.json()["watch"]["state"], r.json()["watch"]["errors"]) == ("pending", 0)
    assert store.due_count("geobox", time.time()) == 1
    assert http.post("/v1/watches/geobox:zz/retry", headers=AUTH).status_code == 404


def test_bulk_retry_takes_the_filter_in_resumable_batches_and_is_idempotent(
    http: httpx.Client, store: Store
) -> None:
    """`:retry` re-arms the error watches a filter matches, `limit` at a time with a cursor to go
    on; a dry run changes nothing and says what would; a repeat skips what was re-armed; other
    labels and states are left alone."""
    errs = [track(http, f"e{i}", labels={"run": "a"}).json()["watch"]["id"] for i in range(5)]
    live = track(http, "live", labels={"run": "a"}).json()["watch"]["id"]
    other = track(http, "other", labels={"run": "b"}).json()["watch"]["id"]
    for wid in [*errs, other]:
        to_state(store, wid, State.ERROR)
    body: dict[str, Any] = {"label": ["run=a"], "limit": 4}
    dry = http.post("/v1/watches:retry", json={**body, "dry_run": True}, headers=AUTH).json()
    assert (dry["matched"], dry["changed"], dry["ids"], dry["skipped"]) == (4, 4, errs[:4], {})
    assert dry["dry_run"] and dry["next_cursor"]
    assert {store.get(w).state for w in errs} == {State.ERROR}  # type: ignore[union-attr]
    first = http.post("/v1/watches:retry", json=body, headers=AUTH).json()
    assert (first["changed"], first["ids"]) == (4, errs[:4])
    rest = http.post("/v1/watches:retry", json={**body, "cursor": first["next_cursor"]},
                     headers=AUTH).json()  # fmt: skip
    assert (rest["ids"], rest["skipped"], rest["next_cursor"]) == ([errs[4]], {"pending": 1}, None)
    assert [store.get(w).state for w in errs] == [State.PENDING] * 5  # type: ignore[union-attr]
    assert store.get(other).state is State.ERROR  # type: ignore[union-attr]
    again = http.post("/v1/watches:retry", json={**body, "limit": 100}, headers=AUTH).json()
    assert (again["changed"], again["skipped"]) == (0, {"pending": 6})
    assert store.get(live).state is State.PENDING  # type: ignore[union-attr]


def test_bulk_cancel_by_state_with_abort_sends_one_abort_per_watch_cancelled(
    http: httpx.Client, store: Store
) -> None:
    """`:cancel` with a state filter cancels only what it matches; with abort, the abort task is
    queued for each watch cancelled and for none already ended; bad filters get a 422."""
    running = [track(http, f"r{i}").json()["watch"]["id"] for i in range(3)]
    for wid in running:
        to_state(store, wid, State.RUNNING)
    pending = track(http, "p").json()["watch"]["id"]
    body = {"state": "running", "abort": True}
    done = http.post("/v1/watches:cancel", json=body, headers=AUTH).json()
    assert (done["changed"], done["ids"], done["next_cursor"]) == (3, running, None)
    assert [store.get(w).state for w in running] == [State.CANCELLED] * 3  # type: ignore[union-attr]
    assert store.get(pending).state is State.PENDING  # type: ignore[union-attr]
    queued = [json.loads(m) for m in store.redis.lrange(keys.QUEUE_POLL, 0, -1)]
    assert sorted(m["headers"]["argsrepr"] for m in queued) == sorted(repr([w]) for w in running)
    again = http.post("/v1/watches:cancel", json={"abort": True}, headers=AUTH).json()
    assert (again["ids"], again["skipped"]) == ([pending], {"cancelled": 3})
    assert store.redis.llen(keys.QUEUE_POLL) == 4
    assert http.post("/v1/watches:cancel", json=body).status_code == 401
    for bad, why in [({"state": "nope"}, "state"), ({"label": ["x"]}, "label.0"),
                     ({"cursor": "zz"}, "cursor"), ({"limit": 0}, "limit"),
                     ({"sort": "id"}, "sort")]:  # fmt: skip
        r = http.post("/v1/watches:cancel", json=bad, headers=AUTH)
        assert r.status_code == 422 and why in r.json()["detail"], (bad, r.text)


def test_delete_forgets_a_final_watch_and_refuses_a_live_one_unless_forced(
    http: httpx.Client, store: Store
) -> None:
    """DELETE removes a final watch from the store (by id or provider:remote_id); a live one is
    a 409 naming its state unless force=true; an unknown one a 404; it needs the token; the
    same task registered again is a new watch; a registration's retention is kept on it."""
    wid = track(http, "t1", labels={"team": "a"}, retention=3600).json()["watch"]["id"]
    assert http.get(f"/v1/watches/{wid}").json()["retention"] == 3600
    assert http.delete(f"/v1/watches/{wid}").status_code == 401
    live = http.delete(f"/v1/watches/{wid}", headers=AUTH)
    assert live.status_code == 409
    assert live.json()["detail"].startswith(f"watch {wid} is pending, not final")
    to_state(store, wid, State.SUCCEEDED)
    gone = http.delete("/v1/watches/geobox:t1", headers=AUTH)
    assert (gone.status_code, gone.json()) == (200, {"id": wid, "state": "succeeded"})
    assert http.get(f"/v1/watches/{wid}").status_code == 404
    assert http.get("/v1/watches", params={"label": "team=a"}).json()["items"] == []
    assert store.counts()["succeeded"] == 0
    assert http.delete(f"/v1/watches/{wid}", headers=AUTH).status_code == 404
    again = track(http, "t1")
    assert (again.status_code, again.json()["watch"]["state"]) == (201, "pending")
    forced = http.delete(f"/v1/watches/{wid}", params={"force": "true"}, headers=AUTH)
    assert (forced.status_code, forced.json()["state"]) == (200, "pending")
    assert store.get(wid) is None and store.due_count("geobox") == 0
    assert track(http, "t2", retention=0).status_code == 422


# operations


def test_stats(http: httpx.Client, store: Store) -> None:
    """Stats count watches by state and provider, and show dispatch lag and live workers."""
    for i in range(3):
        track(http, f"t{i}")
    to_state(store, watch_id("geobox", "t0"), State.RUNNING)
    store.worker_heartbeat("poll-1@here", time.time(), ttl=30, queues=["celery", "taskwarden.poll"])
    stats = http.get("/v1/stats").json()
    assert stats["counts"]["pending"] == 2 and stats["counts"]["running"] == 1
    geobox = stats["providers"]["geobox"]
    assert (geobox["counts"]["pending"], geobox["counts"]["running"]) == (2, 1)
    assert geobox["polls_per_s"] >= 0 and geobox["errors_per_s"] >= 0
    assert stats["dispatch_lag_seconds"] >= 0
    assert list(stats["workers"]) == ["poll-1@here"]
    assert stats["workers"]["poll-1@here"]["age_seconds"] < 30
    assert stats["workers"]["poll-1@here"]["queues"] == ["celery", "taskwarden.poll"]


def test_stats_and_metrics_show_failing_watches_and_an_open_circuit(
    http: httpx.Client, store: Store
) -> None:
    """A watch whose checks fail is counted per provider until it ends, and an open circuit
    shows in /v1/stats (state, probes) and /metrics (taskwarden_circuit_open)."""
    for i in range(2):
        track(http, f"t{i}")
    now = time.time()
    wid = watch_id("geobox", "t0")
    claim = next(c for c in store.claim_due("geobox", now, 10, now + 60) if c.watch_id == wid)
    failing = Decision(State.RUNNING, "RUNNING", None, 1.0, 3, now + 5, failing_since=now - 60)
    assert store.commit(Commit(claim, failing, now, previous=State.PENDING))
    opened = observe(Circuit(), [False] * 10, now, CircuitPolicy())
    store.change_circuit("geobox", lambda c: (opened, None))

    geobox = http.get("/v1/stats").json()["providers"]["geobox"]
    assert geobox["failing"] == 1
    assert (geobox["circuit"]["state"], geobox["circuit"]["failures"]) == ("open", 10)
    assert geobox["circuit"]["probe_at"] == pytest.approx(now + CircuitPolicy().probe_interval)
    scrape = http.get("/metrics").text
    assert 'taskwarden_circuit_open{provider="geobox"} 1.0' in scrape
    assert 'taskwarden_watches_failing{provider="geobox"} 1.0' in scrape

    to_state(store, wid, State.ERROR)  # a watch that has ended is failing no more
    assert http.get("/v1/stats").json()["providers"]["geobox"]["failing"] == 0


def read_events(
    response: httpx.Response | Iterator[str], n: int
) -> tuple[list[dict[str, Any]], int]:
    """The first ``n`` transition events of an SSE response (or of its lines being read), and
    how many comments came."""
    found: list[dict[str, Any]] = []
    comments = 0
    frame: dict[str, str] = {}
    lines = response.iter_lines() if isinstance(response, httpx.Response) else response
    for line in lines:
        if line.startswith(":"):
            comments += 1
        elif line == "":
            if frame:
                found.append({**frame, "data": json.loads(frame["data"])})
                frame = {}
                if len(found) == n:
                    break
        else:
            key, _, value = line.partition(": ")
            frame[key] = value
    return found, comments


def test_events_stream_transitions_and_resume(http: httpx.Client, store: Store) -> None:
    """The event stream sends each transition as it happens (with heartbeats while idle), and
    a reconnect with Last-Event-ID gets only what came after."""
    with http.stream("GET", "/v1/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        # the headers can come before the stream has pinned where it starts: ": connected" says
        # it has, so nothing registered from here on can be missed
        assert next(lines) == ": connected"
        track(http, "t1")
        time.sleep(0.7)  # at least one heartbeat between the two
        wid = track(http, "t2").json()["watch"]["id"]
        to_state(store, wid, State.RUNNING)
        events, comments = read_events(lines, 3)
    assert comments >= 1  # heartbeats, after ": connected"
    assert [e["event"] for e in events] == ["transition"] * 3
    assert [(e["data"]["remote_id"], e["data"]["from"], e["data"]["to"]) for e in events] == [
        ("t1", "", "pending"), ("t2", "", "pending"), ("t2", "pending", "running")
    ]  # fmt: skip
    assert set(events[0]["data"]) == {"watch_id", "provider", "remote_id", "from", "to", "raw",
                                      "progress", "note", "at"}  # fmt: skip
    with http.stream("GET", "/v1/events", headers={"Last-Event-ID": events[0]["id"]}) as again:
        resumed, _ = read_events(again, 2)
    assert [e["id"] for e in resumed] == [events[1]["id"], events[2]["id"]]
    with http.stream("GET", "/v1/events", params={"after": "0"}) as from_start:
        oldest, _ = read_events(from_start, 1)
    assert oldest[0]["id"] == events[0]["id"]
    bad = http.get("/v1/events", params={"after": "yesterday"})
    assert bad.status_code == 422
    assert "is not a stream id" in bad.json()["detail"]


def test_health_and_readiness_say_what_is_missing(http: httpx.Client) -> None:
    """healthz is up; readyz is 503 with a reason per failed check while nothing runs, and 200
    once beat and workers are heard from and dispatch keeps up."""
    assert http.get("/healthz").json() == {"ok": True}
    r = http.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert set(checks) == {
        "redis", "broker", "archive", "beat", "workers", "queues", "dispatch_lag"
    }  # fmt: skip
    assert {name for name, c in checks.items() if not c["ok"]} == {"beat", "workers", "queues"}
    assert "no dispatch heartbeat" in checks["beat"]["detail"]
    assert "no worker heartbeat" in checks["workers"]["detail"]
    assert checks["queues"]["detail"].startswith(f"no worker consumes {keys.QUEUE_DEFAULT}, ")


def test_readiness_fails_on_an_unreachable_archive_and_a_lagging_dispatch(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    """An archive that cannot be listed and a dispatch lag over the threshold each fail their
    check with the reason; the others still pass."""
    closed = free_socket()  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    settings = load_settings(
        data_dir=tmp_path, archive_url="s3://bucket/prefix", api={"token": TOKEN, "ready_max_lag": 5},
        s3={"endpoint_url": f"http://127.0.0.1:{port}", "allow_http": True,
            "access_key_id": "k", "secret_access_key": "s"},
    )  # fmt: skip
    now = time.time()
    store.heartbeat("dispatch", now, ttl=30)
    store.worker_heartbeat("poll-1@here", now, ttl=30)
    store.register(
        Registration(provider="geobox", remote_id="late"),
        now - 60,
    )
    with serve(create_app(settings, redis_url)) as client:
        r = client.get("/readyz")
    closed.close()
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert {name for name, c in checks.items() if not c["ok"]} == {"archive", "dispatch_lag"}
    assert "more than 5 s" in checks["dispatch_lag"]["detail"]
    # a heartbeat without queues (an older worker) cannot tell, so it does not fail readiness
    assert "do not report their queues" in checks["queues"]["detail"]
    assert checks["archive"]["detail"]


def test_metrics_and_dashboard_files(http: httpx.Client) -> None:
    """Metrics are Prometheus text; the page and its files are served; anything else under
    /static is a 404, path tricks included."""
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "taskwarden_watches" in metrics.text
    page = http.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert (
        http.get("/static/dashboard.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    for name in ("__init__.py", "..%2Fapi_token.py", "missing.css", ".hidden.js", "%2e%2e"):
        assert http.get(f"/static/{name}").status_code == 404, name
    assert http.get("/static/../api_token.py").status_code == 404


# the OpenAPI document against the server


def test_openapi_document_matches_behaviour(http: httpx.Client, store: Store) -> None:
    """The document is valid OpenAPI; every (path, method, status) it lists is produced by the
    server in a case below, whose body validates against the documented schema, and the cases
    cover every documented response."""
    spec = http.get("/openapi.json").json()
    validate_spec(spec)
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource("urn:spec", resource)

    def body_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
        response = spec["paths"][path][method]["responses"][str(status)]
        content = response.get("content", {})
        return content.get("application/json", {}).get("schema")

    seen: set[tuple[str, str, int]] = set()

    def check(path: str, method: str, response: httpx.Response) -> None:
        documented = spec["paths"][path][method]["responses"]
        assert str(response.status_code) in documented, (path, method, response.status_code)
        schema = body_schema(path, method, response.status_code)
        if schema is not None:
            resolved = {"$ref": "urn:spec#" + schema["$ref"][1:]} if "$ref" in schema else schema
            Draft202012Validator(resolved, registry=registry).validate(response.json())
        seen.add((path, method, response.status_code))

    wid = track(http, "t1", archive="final").json()["watch"]["id"]
    to_archiving_with_facts(store, wid)  # every field of the record filled, checked by schema
    err = track(http, "t2").json()["watch"]["id"]
    to_state(store, err, State.ERROR)
    w, wr, wc = "/v1/watches", "/v1/watches/{ref}/retry", "/v1/watches/{ref}/cancel"
    check(w, "post", track(http, "t3"))
    check(w, "post", track(http, "t3"))
    check(w, "post", track(http, "t/3"))
    check(w, "post", http.post(w, json={}))
    check(w, "get", http.get(w))
    check(w, "get", http.get(w, params={"limit": 0}))
    check("/v1/watches/{ref}", "get", http.get(f"{w}/{wid}"))
    check("/v1/watches/{ref}", "get", http.get(f"{w}/nope"))
    check(wc, "post", http.post(f"{w}/{wid}/cancel", headers=AUTH))
    check(wc, "post", http.post(f"{w}/nope/cancel", headers=AUTH))
    check(wc, "post", http.post(f"{w}/{wid}/cancel", json={"abort": 3}, headers=AUTH))
    check(wc, "post", http.post(f"{w}/{wid}/cancel"))
    check(wr, "post", http.post(f"{w}/{err}/retry", headers=AUTH))
    check(wr, "post", http.post(f"{w}/{wid}/retry", headers=AUTH))
    check(wr, "post", http.post(f"{w}/nope/retry", headers=AUTH))
    check(wr, "post", http.post(f"{w}/{wid}/retry"))
    check(wc, "post", http.post(f"{w}/{wid}/cancel", json={"abort": True}, headers=AUTH))
    for action in ("cancel", "retry"):
        path = f"/v1/watches:{action}"
        check(path, "post", http.post(path, json={"dry_run": True}, headers=AUTH))
        check(path, "post", http.post(path, json={"limit": 0}, headers=AUTH))
        check(path, "post", http.post(path, json={}))
    gone = track(http, "t4").json()["watch"]["id"]
    wd = "/v1/watches/{ref}"
    check(wd, "delete", http.delete(f"{w}/{gone}", headers=AUTH))
    check(wd, "delete", http.delete(f"{w}/{gone}", params={"force": "yes!"}, headers=AUTH))
    check(wd, "delete", http.delete(f"{w}/{gone}", params={"force": "true"}, headers=AUTH))
    check(wd, "delete", http.delete(f"{w}/{gone}", headers=AUTH))
    check(wd, "delete", http.delete(f"{w}/{gone}"))
    wb = "/v1/watches:batch"
    batch = [{"provider": "geobox", "remote_id": "b1"}, {"provider": "geobox", "remote_id": ""}]
    check(wb, "post", http.post(wb, json=batch, headers=AUTH))
    check(wb, "post", http.post(wb, json=batch))
    check(wb, "post", http.post(wb, json={}, headers=AUTH))
    check(wb, "post", http.post(wb, json=batch * 501, headers=AUTH))
    check("/v1/stats", "get", http.get("/v1/stats"))
    check("/v1/events", "get", http.get("/v1/events", params={"after": "x"}))
    with http.stream("GET", "/v1/events") as events:
        check("/v1/events", "get", events)
    check("/healthz", "get", http.get("/healthz"))
    check("/readyz", "get", http.get("/readyz"))
    check("/metrics", "get", http.get("/metrics"))
    # what only a server with other settings or a dead Redis produces, checked elsewhere:
    # 401 on reads (test_reads_are_open_unless_read_auth), 503 from Redis, 200 from /readyz
    # (test_a_warden_with_the_api_is_ready), 503 from /metrics without B2's module
    elsewhere = {(p, m, 401) for p in ("/v1/watches", "/v1/watches/{ref}", "/v1/stats",
                                       "/v1/events", "/metrics") for m in ("get",)}  # fmt: skip
    elsewhere |= {(p, m, 503) for p, ops in spec["paths"].items() for m in ops
                  if p.startswith("/v1") or p == "/metrics"}  # fmt: skip
    elsewhere.add(("/readyz", "get", 200))
    documented = {(p, m, int(s)) for p, ops in spec["paths"].items() for m, op in ops.items()
                  for s in op["responses"]}  # fmt: skip
    assert documented - seen - elsewhere == set()
    assert seen <= documented


def test_redis_down_is_a_503(tmp_path: Path) -> None:
    """With Redis unreachable, reads answer 503 saying so, and readiness names Redis."""
    closed = free_socket()
    url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    with serve(create_app(settings_for(tmp_path), url)) as client:
        r = client.get("/v1/watches")
        ready = client.get("/readyz")
    closed.close()
    assert r.status_code == 503
    assert r.json()["detail"].startswith("redis unavailable")
    assert ready.status_code == 503
    assert not ready.json()["checks"]["redis"]["ok"]


# a whole warden, API included (`taskwarden run` starts the same processes)


@pytest.fixture(scope="module")
def warden_api(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, SimulatorServer, Store]]:
    tmp = tmp_path_factory.mktemp("warden-api")
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # the API process binds it a moment later
    with SimulatorServer() as sim, RedisServer(tmp / "redis", persist=False) as server:
        env = warden_env(server.url, sim, tmp / "data",
                         TASKWARDEN_ARCHIVE_URL=(tmp / "archive").as_uri(),
                         TASKWARDEN_API__PORT=str(port), TASKWARDEN_API__TOKEN=TOKEN)  # fmt: skip
        store = Store.from_url(server.url)
        with Service(env, poll_concurrency=1, archive_concurrency=1, api=True,
                     log_dir=tmp / "logs"):  # fmt: skip
            yield f"http://127.0.0.1:{port}", sim, store
        store.redis.close()


@pytest.mark.slow
def test_a_warden_with_the_api_is_ready(warden_api: tuple[str, SimulatorServer, Store]) -> None:
    """With beat, workers and the API running, readyz turns 200 with every check passing, and
    the three workers (control, poll, archive) are seen by their heartbeats."""
    url, _, _ = warden_api

    def ready() -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{url}/readyz", timeout=10)
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    body = wait_for(ready, timeout=90, every=0.5)
    assert all(c["ok"] for c in body["checks"].values())
    workers = httpx.get(f"{url}/v1/stats").json()["workers"]
    assert {n.split("-")[0] for n in workers} == {"control", "poll", "archive"}


@pytest.mark.slow
def test_register_through_the_api_then_cancel_with_abort(
    warden_api: tuple[str, SimulatorServer, Store],
) -> None:
    """A task registered through the API is watched to the end; cancel with abort through the
    API aborts a running one on the platform."""
    url, sim, store = warden_api
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        wait_for(lambda: _up(client), timeout=90, every=0.5)
        done = sim.geobox.add_task(running_seconds=1, file_size=10)
        wid = client.post("/v1/watches", json={"provider": "geobox",
                                                "remote_id": done.uuid}).json()["watch"]["id"]  # fmt: skip
        final = wait_for(lambda: _final(client, wid), timeout=60)
        assert final["state"] == "succeeded"
        assert "output.bin" in {o["key"].rsplit("/", 1)[-1] for o in final["outputs"]}
        endless = sim.geobox.add_task(outcome="never")
        wid = client.post("/v1/watches", json={"provider": "geobox",
                                                "remote_id": endless.uuid}).json()["watch"]["id"]  # fmt: skip
        wait_for(lambda: client.get(f"/v1/watches/{wid}").json()["state"] == "running", 60)
        r = client.post(f"/v1/watches/{wid}/cancel", json={"abort": True})
        assert r.json()["cancelled"] is True
        wait_for(lambda: sim.geobox.state(endless.uuid) == "ABORTED", timeout=30)
    assert store.get(wid).state is State.CANCELLED  # type: ignore[union-attr]


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _final(client: httpx.Client, wid: str) -> dict[str, Any] | None:
    watch: dict[str, Any] = client.get(f"/v1/watches/{wid}").json()
    return watch if watch["state"] in ("succeeded", "failed", "error") else None
