"""The Geobox simulator over real HTTP: paths, JSON, auth, scripts, faults, counters, control API,
and the official ``geobox`` SDK pointed at it."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskwarden.simulator import Fault, output_bytes, output_sha256
from taskwarden.simulator.server import SimulatorServer

TOKEN = "sim-token"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")  # the SDK's first format


@pytest.fixture
def api(server: SimulatorServer) -> Iterator[httpx.Client]:
    """A plain HTTP client on the Geobox base URL, with the default token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.geobox_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def control(server: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/_control/", timeout=30) as client:
        yield client


# --- scripted lifecycle -----------------------------------------------------------------------


def test_a_task_plays_its_script_on_the_simulation_clock(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """PENDING, then PROGRESS with current rising, then SUCCESS with its file, as scripted."""
    task = server.geobox.add_task(name="dem", pending_seconds=10, running_seconds=100)
    doc = api.get(f"tasks/{task.uuid}/").json()
    assert set(doc) == {
        "uuid",
        "name",
        "state",
        "accepted_at",
        "started_at",
        "finished_at",
        "result",
    }
    assert (doc["state"], doc["started_at"], doc["result"]) == ("PENDING", None, {})
    assert ISO.match(doc["accepted_at"])

    server.clock.advance(60)
    doc = api.get(f"tasks/{task.uuid}/").json()
    assert doc["state"] == "PROGRESS" and ISO.match(doc["started_at"])
    assert doc["finished_at"] is None
    assert api.get(f"tasks/{task.uuid}/status/").json() == {"current": 50, "total": 100}

    server.clock.advance(60)
    doc = api.get(f"tasks/{task.uuid}/").json()
    assert doc["state"] == "SUCCESS" and ISO.match(doc["finished_at"])
    assert doc["result"] == {"file_uuid": task.output_uuid}


@pytest.mark.parametrize(
    ("script", "state", "result"),
    [
        (
            {"outcome": "failure", "failure_msg": "no bands", "failure_type": "geobox.X"},
            "FAILURE",
            {"detail": {"msg": "no bands", "type": "geobox.X"}},
        ),
        ({"outcome": "failure", "failure_errors": ["e1"]}, "FAILURE", {"errors": ["e1"]}),
        ({"outcome": "aborted"}, "ABORTED", {}),
        ({"outcome": "success_asset", "asset_kind": "raster"}, "SUCCESS", "raster_uuid"),
        ({"outcome": "success_asset", "asset_kind": "3dtiles"}, "SUCCESS", "3dtiles_uuid"),
    ],
)
def test_outcomes_end_in_their_state_and_result(
    server: SimulatorServer, api: httpx.Client, script: dict[str, Any], state: str, result: Any
) -> None:
    """Each scripted outcome shows Geobox's final state word and result shape."""
    task = server.geobox.add_task(**script)
    doc = api.get(f"tasks/{task.uuid}/").json()
    assert doc["state"] == state
    expected = {result: task.output_uuid} if isinstance(result, str) else result
    assert doc["result"] == expected


def test_a_task_that_never_ends_stays_in_progress(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """Outcome 'never' is PROGRESS however much time passes."""
    task = server.geobox.add_task(outcome="never", running_seconds=5)
    server.clock.advance(10**6)
    assert api.get(f"tasks/{task.uuid}/").json()["state"] == "PROGRESS"


def test_speed_factor_runs_scripts_faster_than_the_wall_clock(server: SimulatorServer) -> None:
    """At speed 50 a two-second script is over in well under a second."""
    server.clock.set_speed(50)
    task = server.geobox.add_task(running_seconds=2)
    time.sleep(0.1)
    assert server.geobox.state(task.uuid) == "SUCCESS"


def test_abort_stops_a_running_task_and_leaves_a_finished_one(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """POST abort/ turns a running task ABORTED with a finish time; a finished task keeps its state."""
    running = server.geobox.add_task(outcome="never")
    doc = api.post(f"tasks/{running.uuid}/abort/").json()
    assert (doc["state"], doc["result"]) == ("ABORTED", {})
    assert doc["finished_at"] is not None

    done = server.geobox.add_task()
    assert api.post(f"tasks/{done.uuid}/abort/").json()["state"] == "SUCCESS"


def test_unknown_ids_and_paths_are_404_with_a_detail(api: httpx.Client) -> None:
    """Missing tasks, files and paths answer 404 with FastAPI's {"detail": ...} body."""
    for path in ("tasks/nope/", "tasks/nope/status/", "files/nope/download/", "no/such/path/"):
        r = api.get(path)
        assert r.status_code == 404
        assert isinstance(r.json()["detail"], str)


# --- outputs --------------------------------------------------------------------------------


def test_output_bytes_depend_only_on_seed_and_size() -> None:
    """Same seed and size give the same bytes; a smaller size is a prefix; the sha256 agrees."""
    big = output_bytes("seed-a", 3 * 1024 * 1024 + 5)
    assert output_bytes("seed-a", 1000) == big[:1000]
    assert output_bytes("seed-b", 1000) != big[:1000]
    assert output_sha256("seed-a", len(big)) == hashlib.sha256(big).hexdigest()
    assert output_bytes("seed-a", 0) == b""


def test_a_file_output_downloads_streamed_with_its_name_and_checksum(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """files/{uuid}/download/ streams the deterministic bytes in chunks, named and sized."""
    task = server.geobox.add_task(
        file_name="ndvi.tif", file_size=2 * 1024 * 1024 + 3, content_type="image/tiff"
    )
    digest = hashlib.sha256()
    chunks = 0
    with api.stream("GET", f"files/{task.output_uuid}/download/") as r:
        assert r.headers["content-length"] == str(task.script.file_size)
        assert r.headers["content-disposition"] == 'attachment; filename="ndvi.tif"'
        assert r.headers["content-type"].startswith("image/tiff")
        for chunk in r.iter_raw():
            digest.update(chunk)
            chunks += 1
    assert digest.hexdigest() == task.sha256 == output_sha256(task.uuid, task.script.file_size)
    assert chunks > 1


def test_outputs_appear_only_once_the_task_succeeded(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """Before SUCCESS the file and its info are 404; after it they are served."""
    task = server.geobox.add_task(running_seconds=100, file_name="a.csv", file_size=5)
    assert api.get(f"files/{task.output_uuid}/info/").status_code == 404
    server.clock.advance(101)
    info = api.get(f"files/{task.output_uuid}/info/", params={"f": "json"}).json()
    assert (info["uuid"], info["name"], info["size"], info["file_type"]) == (
        task.output_uuid,
        "a.csv",
        5,
        "CSV",
    )


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("layer", "vectorLayers"),
        ("raster", "rasters"),
        ("model", "3dmodels"),
        ("3dtiles", "3dtiles"),
        ("table", "tables"),
    ],
)
def test_each_asset_kind_is_described_at_the_sdk_path(
    server: SimulatorServer, api: httpx.Client, kind: str, path: str
) -> None:
    """A published asset answers at the detail path the SDK's output_asset uses for its kind."""
    task = server.geobox.add_task(outcome="success_asset", asset_kind=kind)
    body = api.get(f"{path}/{task.output_uuid}/", params={"f": "json"}).json()
    assert (body["uuid"], body["task_uuid"]) == (task.output_uuid, task.uuid)


@pytest.mark.parametrize(
    ("kind", "paths"),
    [
        ("raster", ["rasters/{u}/download/", "rasters/{u}/content/"]),
        ("model", ["3dmodels/{u}/content/"]),
    ],
)
def test_raster_and_model_bytes_download_with_auth_once_published(
    server: SimulatorServer, api: httpx.Client, kind: str, paths: list[str]
) -> None:
    """The download routes the SDK uses stream the asset's bytes (length announced) once the
    task succeeded, need credentials, and the description says the size."""
    task = server.geobox.add_task(
        outcome="success_asset", asset_kind=kind, running_seconds=10, file_size=4000,
        file_name="out.tif",
    )  # fmt: skip
    urls = [path.format(u=task.output_uuid) for path in paths]
    assert [api.get(url).status_code for url in urls] == [404] * len(urls)
    server.clock.advance(11)
    for url in urls:
        r = api.get(url)
        assert (r.status_code, r.headers["content-length"]) == (200, "4000")
        assert hashlib.sha256(r.content).hexdigest() == task.sha256
        assert ("content-disposition" in r.headers) is (kind == "raster")
        assert httpx.get(f"{server.geobox_url}{url}").status_code == 401
    described = api.get(f"{'rasters' if kind == 'raster' else '3dmodels'}/{task.output_uuid}/")
    assert described.json()["size"] == 4000


def test_a_model_with_an_obj_model_has_its_content_there(
    api: httpx.Client, server: SimulatorServer
) -> None:
    """model_obj: the model names obj, whose description and content exist; its own has none."""
    task = server.geobox.add_task(outcome="success_asset", asset_kind="model", model_obj=True)
    own = api.get(f"3dmodels/{task.output_uuid}/").json()
    assert own["obj"] == task.obj_uuid
    assert api.get(f"3dmodels/{task.obj_uuid}/").json()["uuid"] == task.obj_uuid
    assert api.get(f"3dmodels/{task.output_uuid}/content/").status_code == 404
    assert api.get(f"3dmodels/{task.obj_uuid}/content/").status_code == 200


# --- auth -------------------------------------------------------------------------------------


def test_requests_without_credentials_are_401(server: SimulatorServer) -> None:
    """No credentials, a wrong token or a wrong key: 401 with a detail; auth off lets all in."""
    task = server.geobox.add_task()
    url = f"{server.geobox_url}tasks/{task.uuid}/"
    r = httpx.get(url)
    assert (r.status_code, r.json(), r.headers["www-authenticate"]) == (
        401,
        {"detail": "Not authenticated"},
        "Bearer",
    )
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(url, params={"apikey": "nope"}).status_code == 401
    assert httpx.get(url, params={"apikey": "sim-apikey"}).status_code == 200
    server.geobox.configure({"auth_required": False})
    assert httpx.get(url).status_code == 200


def test_password_login_issues_a_token_that_expires(server: SimulatorServer) -> None:
    """auth/token/ trades a form login for a bearer token, valid for token_ttl seconds."""
    server.geobox.configure({"token_ttl": 60})
    task = server.geobox.add_task()
    login = f"{server.geobox_url}auth/token/"
    r = httpx.post(login, data={"username": "sim-user", "password": "sim-password"})
    assert (r.status_code, r.json()["expires_in"]) == (200, 60)
    token = r.json()["access_token"]
    assert server.geobox.logins[-1]["form"] == {"username": "sim-user", "password": "sim-password"}
    url = f"{server.geobox_url}tasks/{task.uuid}/"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    server.clock.advance(61)
    expired = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert (expired.status_code, expired.json()["detail"]) == (401, "Token has expired")

    bad = httpx.post(login, data={"username": "sim-user", "password": "wrong"})
    assert bad.status_code == 401
    missing = httpx.post(login, data={"username": "sim-user"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "password"]


# --- listing ----------------------------------------------------------------------------------


def test_task_list_filters_pages_and_counts(server: SimulatorServer, api: httpx.Client) -> None:
    """GET tasks/ honours state, search, skip, limit (default 10) and return_count."""
    server.geobox.add_tasks([{"name": f"pending {i}", "pending_seconds": 99} for i in range(12)])
    server.geobox.add_tasks([{"name": f"done {i}"} for i in range(3)])
    assert len(api.get("tasks/").json()) == 10
    assert api.get("tasks/", params={"state": "SUCCESS"}).json()[0]["state"] == "SUCCESS"
    counted = api.get("tasks/", params={"state": "PENDING", "return_count": "True"}).json()
    assert counted == {"count": 12}
    page = api.get("tasks/", params={"state": "PENDING", "skip": 10, "limit": 5}).json()
    assert [t["name"] for t in page] == ["pending 10", "pending 11"]
    assert len(api.get("tasks/", params={"search": "DONE", "limit": 100}).json()) == 3
    assert api.get("tasks/", params={"limit": "many"}).status_code == 422


# --- faults -----------------------------------------------------------------------------------


def test_a_5xx_burst_fails_n_requests_then_clears(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """A status fault with count 3 answers three 503s with a detail body, then the real thing."""
    task = server.geobox.add_task()
    server.inject(kind="status", status=503, count=3, task=task.uuid)
    codes = [api.get(f"tasks/{task.uuid}/").status_code for _ in range(4)]
    assert codes == [503, 503, 503, 200]


def test_faults_hit_only_the_task_route_and_method_they_name(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """A fault scoped to one task and route leaves other tasks and routes alone."""
    target, other = server.geobox.add_task(), server.geobox.add_task()
    server.inject(kind="status", status=500, task=target.uuid, route="tasks/{uuid}/", count=None)
    assert api.get(f"tasks/{other.uuid}/").status_code == 200
    assert api.get(f"tasks/{target.uuid}/status/").status_code == 200
    assert api.get(f"tasks/{target.uuid}/").status_code == 500
    assert api.get(f"tasks/{target.uuid}/").status_code == 500  # count None: until removed
    server.faults.clear()
    assert api.get(f"tasks/{target.uuid}/").status_code == 200


@pytest.mark.parametrize(("retry_after", "header"), [("30", "30"), (None, None)])
def test_rate_limit_answers_429_with_or_without_retry_after(
    server: SimulatorServer, api: httpx.Client, retry_after: str | None, header: str | None
) -> None:
    """rate_limit answers 429 and sends Retry-After only when told to."""
    task = server.geobox.add_task()
    server.inject(kind="rate_limit", retry_after=retry_after)
    r = api.get(f"tasks/{task.uuid}/")
    assert (r.status_code, r.headers.get("retry-after")) == (429, header)


def test_delay_slows_the_answer(server: SimulatorServer, api: httpx.Client) -> None:
    """A delay fault holds the response for its delay, then answers normally."""
    task = server.geobox.add_task()
    server.inject(kind="delay", delay=0.3)
    started = time.monotonic()
    assert api.get(f"tasks/{task.uuid}/").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_hang_answers_nothing_until_the_client_gives_up(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """A hang fault sends not even the headers: the client's read timeout is what ends it; the
    request is counted, and the next one is answered."""
    task = server.geobox.add_task()
    server.inject(kind="hang", delay=60, route="tasks/{uuid}/")
    with pytest.raises(httpx.ReadTimeout):
        api.get(f"tasks/{task.uuid}/", timeout=httpx.Timeout(10, read=0.3))
    assert api.get(f"tasks/{task.uuid}/").status_code == 200
    assert server.stats.count(route="tasks/{uuid}/", task=task.uuid) == 2


def test_trickle_sends_the_whole_body_a_byte_at_a_time(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """A trickle fault answers the same document, a byte at a time (reads come in pieces of a
    few bytes at most, as a slow client gathers what arrived since its last read)."""
    task = server.geobox.add_task()
    whole = api.get(f"tasks/{task.uuid}/").content
    server.inject(kind="trickle", delay=0.002, route="tasks/{uuid}/")
    with api.stream("GET", f"tasks/{task.uuid}/") as r:
        chunks = list(r.iter_raw())
    assert b"".join(chunks) == whole
    assert len(chunks) > len(whole) // 4


def test_reset_drops_the_connection(server: SimulatorServer, api: httpx.Client) -> None:
    """A reset fault closes the connection without an answer; the next request works."""
    task = server.geobox.add_task()
    server.inject(kind="reset")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        api.get(f"tasks/{task.uuid}/")
    assert api.get(f"tasks/{task.uuid}/").status_code == 200


@pytest.mark.parametrize("route", ["tasks/{uuid}/", "files/{uuid}/download/"])
def test_truncate_sends_fewer_bytes_than_announced(
    server: SimulatorServer, api: httpx.Client, route: str
) -> None:
    """A truncate fault announces the full length, sends keep_bytes, and closes."""
    task = server.geobox.add_task(file_size=500_000)
    server.inject(kind="truncate", keep_bytes=100, route=route)
    path = route.replace("{uuid}", task.uuid if route.startswith("tasks") else task.output_uuid)
    with pytest.raises(httpx.RemoteProtocolError, match="received 100 bytes"):
        api.get(path)


def test_malformed_json_is_a_garbled_200(server: SimulatorServer, api: httpx.Client) -> None:
    """malformed_json answers 200 with a cut JSON document of consistent length."""
    task = server.geobox.add_task()
    server.inject(kind="malformed_json")
    r = api.get(f"tasks/{task.uuid}/")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_unknown_status_changes_only_the_state_word(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """unknown_status shows its word on the task document and is not spent on status/."""
    task = server.geobox.add_task(running_seconds=100)
    server.inject(kind="unknown_status", word="REVOKED")
    assert api.get(f"tasks/{task.uuid}/status/").status_code == 200
    assert api.get(f"tasks/{task.uuid}/").json()["state"] == "REVOKED"
    assert api.get(f"tasks/{task.uuid}/").json()["state"] == "PROGRESS"


def test_an_html_error_page_can_stand_in_for_the_platform(
    server: SimulatorServer, api: httpx.Client
) -> None:
    """A status fault with a body sends that body, as a proxy in front of the API would."""
    task = server.geobox.add_task()
    server.inject(Fault(kind="status", status=502, body="<h1>502 Bad Gateway</h1>"))
    r = api.get(f"tasks/{task.uuid}/")
    assert (r.status_code, r.text) == (502, "<h1>502 Bad Gateway</h1>")


# --- counters and control API ---------------------------------------------------------------


def test_counters_split_requests_by_route_method_and_task(
    server: SimulatorServer, api: httpx.Client, control: httpx.Client
) -> None:
    """Stats count each (method, route template) and each task, in Python and over HTTP."""
    a, b = server.geobox.add_task(), server.geobox.add_task()
    for _ in range(3):
        api.get(f"tasks/{a.uuid}/")
    api.get(f"tasks/{b.uuid}/status/")
    api.post(f"tasks/{b.uuid}/abort/")
    assert server.stats.count(route="tasks/{uuid}/", task=a.uuid) == 3
    assert server.stats.count(task=b.uuid) == 2
    assert server.stats.count(method="POST") == 1
    stats = control.get("stats", params={"by_task": "true"}).json()
    assert stats["routes"] == {
        "GET /geobox/v1/tasks/{uuid}/": 3,
        "GET /geobox/v1/tasks/{uuid}/status/": 1,
        "POST /geobox/v1/tasks/{uuid}/abort/": 1,
    }
    assert stats["tasks"] == {a.uuid: 3, b.uuid: 2}
    assert control.post("reset", params={"only": "stats"}).status_code == 200
    assert control.get("stats").json()["total"] == 0
    assert server.geobox.tasks  # only the counters were reset


def test_concurrency_is_measured_in_requests_and_connections(server: SimulatorServer) -> None:
    """Five clients held by a delay show up as five requests and connections at once."""
    task = server.geobox.add_task()
    server.inject(kind="delay", delay=0.5, count=5)
    url = f"{server.geobox_url}tasks/{task.uuid}/"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    threads = [
        threading.Thread(target=httpx.get, args=(url,), kwargs={"headers": headers})
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    snapshot = server.simulation.stats_snapshot()
    assert snapshot["max_in_flight"] == 5
    assert snapshot["max_connections"] >= 5
    assert snapshot["connections_opened"] == 5


def test_control_api_creates_20000_tasks_in_one_call(
    server: SimulatorServer, control: httpx.Client, api: httpx.Client
) -> None:
    """One POST scripts 20,000 tasks; status reads stay cheap with all of them loaded."""
    specs = [{"pending_seconds": 10**6} for _ in range(20_000)]
    r = control.post("geobox/tasks", json=specs)
    assert r.status_code == 201 and r.json()["created"] == 20_000
    ids = [t["uuid"] for t in r.json()["tasks"]]
    assert len(set(ids)) == 20_000 and len(server.geobox.tasks) == 20_000
    started = time.monotonic()
    for uuid in ids[:300]:
        assert api.get(f"tasks/{uuid}/").json()["state"] == "PENDING"
    assert time.monotonic() - started < 5  # about 0.2 s on a laptop; a scan per request is not


def test_control_api_validates_shows_and_clears_tasks(
    server: SimulatorServer, control: httpx.Client
) -> None:
    """Bad specs are 422 with the field named; a task shows its script and checksum; DELETE clears."""
    bad = control.post("geobox/tasks", json=[{"outcome": "maybe"}])
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [0, "outcome"]
    created = control.post("geobox/tasks", json={"uuid": "t-1", "file_size": 10}).json()
    assert created["tasks"][0]["uuid"] == "t-1"
    shown = control.get("geobox/tasks/t-1").json()
    assert shown["document"]["state"] == "SUCCESS"
    assert shown["sha256"] == output_sha256("t-1", 10)
    assert control.delete("geobox/tasks").status_code == 200
    assert control.get("geobox/tasks/t-1").status_code == 404


def test_control_api_arms_lists_and_disarms_faults(
    server: SimulatorServer, control: httpx.Client, api: httpx.Client
) -> None:
    """Faults posted over HTTP fire like Python ones and can be listed and removed."""
    task = server.geobox.add_task()
    ids = control.post("faults", json=[{"kind": "status", "status": 504, "count": None}]).json()
    assert api.get(f"tasks/{task.uuid}/").status_code == 504
    armed = control.get("faults").json()
    assert (armed[0]["id"], armed[0]["fired"]) == (ids["ids"][0], 1)
    assert control.delete(f"faults/{ids['ids'][0]}").status_code == 200
    assert api.get(f"tasks/{task.uuid}/").status_code == 200
    assert control.post("faults", json={"kind": "explode"}).status_code == 422
    assert control.post("faults", json={"kind": "reset", "platform": "mars"}).status_code == 422


def test_control_api_moves_the_clock(server: SimulatorServer, control: httpx.Client) -> None:
    """PUT clock advances simulation time and sets the speed factor."""
    task = server.geobox.add_task(running_seconds=100)
    body = control.put("clock", json={"advance": 200, "speed": 2}).json()
    assert body["speed"] == 2
    assert server.geobox.state(task.uuid) == "SUCCESS"


# --- the official SDK as the judge of fidelity ------------------------------------------------


@pytest.fixture
def sdk(server: SimulatorServer) -> Iterator[Any]:
    """The real ``geobox`` SDK's client on the simulator (a test dependency: never skipped)."""
    import geobox

    client = geobox.GeoboxClient(host=f"{server.url}/geobox/", ver="v1/", access_token=TOKEN)
    yield client
    client.session.close()


def test_the_sdk_waits_for_a_task_to_finish(server: SimulatorServer, sdk: Any) -> None:
    """The SDK's Task.wait() polls the simulator to SUCCESS, progress bar and all."""
    from geobox.enums import TaskStatus

    task = server.geobox.add_task(name="sdk wait", pending_seconds=0.1, running_seconds=0.4)
    sdk_task = sdk.get_task(uuid=task.uuid)
    assert sdk_task.wait(interval=0.05, progress_bar=True) == TaskStatus.SUCCESS
    assert server.stats.count(route="tasks/{uuid}/status/", task=task.uuid) > 0
    assert sdk_task.output_asset.uuid == task.output_uuid


def test_the_sdk_logs_in_and_downloads_the_output(server: SimulatorServer, tmp_path: Path) -> None:
    """A password login and File.download() through the SDK save the exact bytes."""
    import geobox

    client = geobox.GeoboxClient(
        host=f"{server.url}/geobox/", ver="v1/", username="sim-user", password="sim-password"
    )
    try:
        task = server.geobox.add_task(file_name="dem.tif", file_size=300_000)
        output = client.get_task(uuid=task.uuid).output_asset
        saved = Path(output.download(save_path=f"{tmp_path}/", progress_bar=False))
    finally:
        client.session.close()
    assert saved.name == "dem.tif"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == task.sha256


def test_the_sdk_lists_counts_aborts_and_reads_errors(server: SimulatorServer, sdk: Any) -> None:
    """get_tasks (list and count), Task.abort() and Task.errors work unchanged."""
    from geobox.enums import TaskStatus

    running = server.geobox.add_task(outcome="never")
    failed = server.geobox.add_task(outcome="failure", failure_msg="bad band math")
    assert sdk.get_tasks(state=TaskStatus.PROGRESS, return_count=True) == 1
    assert [t.uuid for t in sdk.get_tasks(limit=5)] == [running.uuid, failed.uuid]
    sdk.get_task(uuid=running.uuid).abort()
    assert server.geobox.state(running.uuid) == "ABORTED"
    assert sdk.get_task(uuid=failed.uuid).errors["detail"]["msg"] == "bad band math"
    layer = server.geobox.add_task(outcome="success_asset", asset_kind="layer")
    assert sdk.get_task(uuid=layer.uuid).output_asset.uuid == layer.output_uuid
