"""The Descartes Labs simulator over real HTTP: JSON:API paths and envelopes, scripted jobs and
exports, storage, the accounts service and its JWTs, faults, counters and the control API."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskwarden.simulator.descarteslabs import DescartesLabsConfig, DescartesLabsSimulator
from taskwarden.simulator.descarteslabs_accounts import JWT_BEARER, LEGACY_CLIENT_ID
from taskwarden.simulator.server import SimulatorServer

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
COPY = "vector/v2/products/{product_id}/search/copy/status"
EXPORT = "vector/v2/products/{product_id}/search/export/{export_id}"
DATA = "storage/v1/data/get/{key:path}"


@pytest.fixture
def lab(server: SimulatorServer) -> DescartesLabsSimulator:
    """The module simulator's Descartes Labs, back to its default config."""
    server.descarteslabs.configure(DescartesLabsConfig().model_dump())
    return server.descarteslabs


@pytest.fixture
def api(server: SimulatorServer, lab: DescartesLabsSimulator) -> Iterator[httpx.Client]:
    """A plain client on ``…/descarteslabs/`` with a JWT from the accounts service."""
    base = f"{server.url}/descarteslabs/"
    token = httpx.post(f"{base}accounts/token", json=grant()).json()["access_token"]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture
def control(server: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/_control/", timeout=30) as client:
        yield client


def grant(**fields: str) -> dict[str, str]:
    return {
        "client_id": "sim-client",
        "grant_type": "refresh_token",
        "refresh_token": "sim-refresh-token",
        **fields,
    }


def legacy(**fields: str) -> dict[str, str]:
    """The SDK 1.12.1's delegation grant for the legacy client id (auth.py:703-718)."""
    return {
        "scope": "openid name groups org email",
        "client_id": LEGACY_CLIENT_ID,
        "grant_type": JWT_BEARER,
        "target": LEGACY_CLIENT_ID,
        "api_type": "app",
        "refresh_token": "sim-legacy-refresh-token",
        **fields,
    }


def test_the_legacy_client_id_buys_a_jwt_with_the_delegation_grant(
    server: SimulatorServer, lab: DescartesLabsSimulator
) -> None:
    """jwt-bearer with scope, target and api_type buys a JWT whose aud is the legacy id."""
    r = httpx.post(f"{server.url}/descarteslabs/accounts/token", json=legacy())
    assert r.status_code == 200
    assert claims(r.json()["access_token"])["aud"] == LEGACY_CLIENT_ID
    assert lab.accounts.requests == [legacy()]


def claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# --- jobs -------------------------------------------------------------------------------------


def test_a_copy_job_plays_its_script_in_a_json_api_envelope(
    server: SimulatorServer, lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """PENDING, RUNNING, then DONE, as {data: {id, type: copy_job, attributes}} with times."""
    job = lab.add_copy_job(pending_seconds=10, running_seconds=100)
    url = f"vector/v2/products/{job.product_id}/search/copy/status"
    doc = api.get(url).json()
    assert set(doc) == {"data"} and set(doc["data"]) == {"id", "type", "attributes"}
    assert (doc["data"]["id"], doc["data"]["type"]) == (job.script.job_id, "copy_job")
    attributes = doc["data"]["attributes"]
    assert set(attributes) == {"state", "created", "started", "ended", "errors"}
    assert (attributes["state"], attributes["started"], attributes["errors"]) == (
        "PENDING",
        None,
        [],
    )
    assert ISO.match(attributes["created"])
    server.clock.advance(50)
    attributes = api.get(url).json()["data"]["attributes"]
    assert attributes["state"] == "RUNNING" and ISO.match(attributes["started"])
    server.clock.advance(100)
    attributes = api.get(url).json()["data"]["attributes"]
    assert (attributes["state"], attributes["errors"]) == ("DONE", [])
    assert ISO.match(attributes["ended"])


@pytest.mark.parametrize(
    ("script", "state", "errors"),
    [
        ({"errors": ["feature 3: bad geometry"]}, "DONE", ["feature 3: bad geometry"]),
        ({"success_word": "SUCCESS"}, "SUCCESS", []),
        ({"outcome": "failure"}, "FAILED", []),
        ({"outcome": "failure", "failure_word": "FAILURE", "errors": ["e"]}, "FAILURE", ["e"]),
        ({"outcome": "never"}, "RUNNING", []),
    ],
)
def test_delete_jobs_end_in_their_word_and_errors(
    lab: DescartesLabsSimulator, api: httpx.Client, script: dict[str, Any], state: str, errors: Any
) -> None:
    """A delete job shows its scripted final word and errors under type delete_job."""
    job = lab.add_delete_job(**script)
    doc = api.get(f"vector/v2/products/{job.product_id}/search/delete/status").json()
    assert doc["data"]["type"] == "delete_job"
    assert (doc["data"]["attributes"]["state"], doc["data"]["attributes"]["errors"]) == (
        state,
        errors,
    )


def test_errors_can_show_while_the_job_runs(lab: DescartesLabsSimulator, api: httpx.Client) -> None:
    """errors_while_running lists the errors before the job ends."""
    job = lab.add_copy_job(running_seconds=3600, errors=["x"], errors_while_running=True)
    doc = api.get(f"vector/v2/products/{job.product_id}/search/copy/status").json()
    assert (doc["data"]["attributes"]["state"], doc["data"]["attributes"]["errors"]) == (
        "RUNNING",
        ["x"],
    )


def test_jobs_cannot_be_scripted_to_be_cancelled(lab: DescartesLabsSimulator) -> None:
    """The platform has no cancellation, so neither does the simulator."""
    with pytest.raises(ValueError, match="cannot be cancelled"):
        lab.add_copy_job(outcome="aborted")


def test_unknown_jobs_and_products_are_json_api_404s(api: httpx.Client) -> None:
    """404s carry {errors: [{title, status, detail}]}, status as a string."""
    r = api.get("vector/v2/products/nobody:x/search/copy/status")
    assert r.status_code == 404
    assert r.json() == {
        "errors": [
            {"title": "Not Found", "status": "404", "detail": "No copy job found for this product"}
        ]
    }
    assert api.get("vector/v2/products/nobody:x").status_code == 404


# --- exports ----------------------------------------------------------------------------------


def test_an_export_is_404_until_done_then_names_its_key_in_labels(
    server: SimulatorServer, lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """While pending or running the result is 404; then SUCCESS with labels[3] the key."""
    export = lab.add_export(product_id="sim:roads", key="roads/2024", running_seconds=60)
    url = f"vector/v2/products/sim:roads/search/export/{export.export_id}"
    r = api.get(url)
    assert r.status_code == 404 and r.json()["errors"][0]["status"] == "404"
    server.clock.advance(61)
    data = api.get(url).json()["data"]
    assert (data["id"], data["type"]) == (export.export_id, "export")
    attributes = data["attributes"]
    assert attributes["status"] == "SUCCESS"
    assert attributes["labels"][3] == "roads/2024"
    assert (attributes["exception_name"], attributes["failure_type"]) == (None, None)
    assert {"created", "runtime", "peak_memory_usage", "result_key"} <= set(attributes)


def test_a_failed_export_reports_exception_type_runtime_and_memory(
    lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """FAILURE results carry the failure fields the SDK exposes."""
    export = lab.add_export(
        outcome="failure",
        exception_name="MemoryError",
        failure_type="executable_failure",
        runtime=5,
        peak_memory_usage=2**30,
    )
    url = f"vector/v2/products/{export.product_id}/search/export/{export.export_id}"
    attributes = api.get(url).json()["data"]["attributes"]
    assert {k: attributes[k] for k in ("status", "exception_name", "failure_type")} == {
        "status": "FAILURE",
        "exception_name": "MemoryError",
        "failure_type": "executable_failure",
    }
    assert (attributes["runtime"], attributes["peak_memory_usage"]) == (5, 2**30)


def test_the_exported_geojson_and_log_come_from_storage(
    lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """data/get/{key} streams deterministic GeoJSON with its length; logs/get the log."""
    export = lab.add_export(key="nested/key.geojson", features=40)
    r = api.get("storage/v1/data/get/nested/key.geojson")
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    assert hashlib.sha256(r.content).hexdigest() == export.sha256
    collection = json.loads(r.content)
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 40
    log = api.get(f"storage/v1/logs/get/{export.result_key}")
    assert log.content == export.log and b"wrote 40 features" in log.content
    again = lab.add_export(seed=export.seed, features=40)
    assert again.sha256 == export.sha256  # a function of seed and size only


def test_storage_has_nothing_before_success_or_when_not_stored(
    server: SimulatorServer, lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """The data object appears once the export succeeds, and never with stored off."""
    running = lab.add_export(running_seconds=100)
    gone = lab.add_export(stored=False)
    assert api.get(f"storage/v1/data/get/{running.key}").status_code == 404
    assert api.get(f"storage/v1/data/get/{gone.key}").status_code == 404
    server.clock.advance(101)
    assert api.get(f"storage/v1/data/get/{running.key}").status_code == 200


def test_the_export_list_holds_finished_exports_paged_by_continuation_token(
    lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """Only completed exports are listed, two a page, until the token is null."""
    lab.configure({"export_page_size": 2})
    done = [lab.add_export(product_id="sim:p").export_id for _ in range(3)]
    lab.add_export(product_id="sim:p", outcome="never")
    seen, token = [], None
    while True:
        params = {"continuation_token": token} if token else {}
        page = api.get("vector/v2/products/sim:p/search/export", params=params).json()
        seen += [item["id"] for item in page["data"]]
        token = page["meta"]["continuation_token"]
        if token is None:
            break
    assert seen == done


def test_jobs_start_through_the_api_and_play_the_api_script(
    server: SimulatorServer, lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """POST copy (id namespaced), DELETE search and POST export start jobs that finish."""
    lab.configure({"api_pending_seconds": 1, "api_running_seconds": 2})
    lab.add_product("sim:source")
    product = {"id": "copy-1", "title": "t", "description": "d"}
    created = api.post("vector/v2/products/sim:source/search/copy", json={"product": product})
    new_id = created.json()["data"]["id"]
    assert re.fullmatch(r"[0-9a-f]{40}:copy-1", new_id)
    assert api.request("DELETE", "vector/v2/products/sim:source/search", json={}).is_success
    export_id = api.post(
        "vector/v2/products/sim:source/search/export", json={"key": "k", "query": {}}
    ).json()["export_id"]
    copy = f"vector/v2/products/{new_id}/search/copy/status"
    assert api.get(copy).json()["data"]["attributes"]["state"] == "PENDING"
    server.clock.advance(3)
    assert api.get(copy).json()["data"]["attributes"]["state"] == "DONE"
    delete = "vector/v2/products/sim:source/search/delete/status"
    assert api.get(delete).json()["data"]["attributes"]["state"] == "DONE"
    result = api.get(f"vector/v2/products/sim:source/search/export/{export_id}").json()
    assert result["data"]["attributes"]["labels"][3] == "k"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "sim:source/search/copy", {"product": {"id": "x"}}, 400),
        ("POST", "sim:source/search/export", {"query": {}}, 400),
        ("POST", "nobody:x/search/export", {"key": "k"}, 404),
        ("DELETE", "nobody:x/search", {}, 404),
    ],
)
def test_malformed_or_misplaced_job_requests_are_refused(
    lab: DescartesLabsSimulator, api: httpx.Client, method: str, path: str, body: Any, status: int
) -> None:
    """Missing fields are 400, unknown products 404, both as JSON:API errors."""
    lab.add_product("sim:source")
    r = api.request(method, f"vector/v2/products/{path}", json=body)
    assert r.status_code == status and r.json()["errors"][0]["status"] == str(status)


# --- accounts and auth ------------------------------------------------------------------------


def test_the_token_endpoint_issues_jwts_the_sdk_can_read(
    server: SimulatorServer, lab: DescartesLabsSimulator
) -> None:
    """A refresh token buys a JWT whose aud, iat and exp (epoch seconds) are readable."""
    lab.configure({"token_ttl": 120})
    r = httpx.post(f"{server.url}/descarteslabs/accounts/token", json=grant())
    body = r.json()
    assert (r.status_code, body["token_type"], body["expires_in"]) == (200, "Bearer", 120)
    seen = claims(body["access_token"])
    assert seen["aud"] == "sim-client"
    assert seen["exp"] - seen["iat"] == pytest.approx(120, abs=1)
    assert lab.counters == {"issued": 1}
    lab.configure({"token_field": "id_token"})
    assert (
        "id_token" in httpx.post(f"{server.url}/descarteslabs/accounts/token", json=grant()).json()
    )


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (grant(refresh_token="wrong"), 401, "invalid_grant"),
        (grant(client_id="stranger"), 401, "invalid_grant"),
        (grant(grant_type="password"), 400, "unsupported_grant_type"),
        ({"client_id": "sim-client", "grant_type": "refresh_token"}, 400, "invalid_request"),
        # a grant the client id does not take: what the SDK 1.12.1 would never send
        (
            grant(grant_type=JWT_BEARER, target="sim-client", api_type="app"),
            400,
            "unauthorized_client",
        ),
        (legacy(grant_type="refresh_token"), 400, "unauthorized_client"),
        (legacy(target="sim-client"), 400, "invalid_request"),
        (legacy(api_type="web"), 400, "invalid_request"),
        (legacy(scope="email"), 400, "invalid_scope"),
        (legacy(refresh_token="wrong"), 401, "invalid_grant"),
    ],
)
def test_the_token_endpoint_refuses_bad_grants(
    server: SimulatorServer, lab: DescartesLabsSimulator, body: Any, status: int, error: str
) -> None:
    """Wrong refresh tokens are 401 invalid_grant; malformed grants, and grants the client id
    does not take (the legacy id's jwt-bearer delegation), 400; all counted."""
    r = httpx.post(f"{server.url}/descarteslabs/accounts/token", json=body)
    assert (r.status_code, r.json()["error"]) == (status, error)
    assert lab.counters == {"refused": 1}


def test_api_calls_need_a_live_token(server: SimulatorServer, lab: DescartesLabsSimulator) -> None:
    """Missing, forged, expired and revoked tokens are 401 JSON:API errors; auth can be off."""
    job = lab.add_copy_job()
    url = f"{server.url}/descarteslabs/vector/v2/products/{job.product_id}/search/copy/status"

    def detail(token: str | None) -> str:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.get(url, headers=headers)
        return "ok" if r.status_code == 200 else str(r.json()["errors"][0]["detail"])

    good = lab.accounts.mint(ttl=10)
    assert detail(good) == "ok"
    assert detail(None) == "Missing bearer token"
    assert detail(good[:-2] + "xx") == "Invalid token"
    server.clock.advance(11)
    assert detail(good) == "Token has expired"
    fresh = lab.accounts.mint()
    lab.accounts.revoke()
    assert detail(fresh) == "Token has been revoked"
    assert lab.counters["unauthorized"] == 4
    lab.configure({"auth_required": False})
    assert detail(None) == "ok"


# --- faults, counters, control ----------------------------------------------------------------


def test_faults_hit_job_status_export_and_storage_routes(
    server: SimulatorServer, lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """Unknown words, 429 with Retry-After and truncation reach the routes they name."""
    job = lab.add_copy_job(running_seconds=3600)
    export = lab.add_export(features=500)
    server.inject(kind="unknown_status", route=COPY, word="QUEUED")
    copy = f"vector/v2/products/{job.product_id}/search/copy/status"
    assert api.get(copy).json()["data"]["attributes"]["state"] == "QUEUED"
    server.inject(kind="rate_limit", task=export.export_id, route=EXPORT, retry_after="3")
    r = api.get(f"vector/v2/products/{export.product_id}/search/export/{export.export_id}")
    assert (r.status_code, r.headers["retry-after"]) == (429, "3")
    assert r.json()["errors"][0]["status"] == "429"
    server.inject(kind="truncate", route=DATA, task=export.export_id, keep_bytes=100)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(f"storage/v1/data/get/{export.key}")


def test_counters_split_requests_by_route_and_task(
    server: SimulatorServer, lab: DescartesLabsSimulator, api: httpx.Client
) -> None:
    """Per-route, per-task counts: job status by product id, storage by export id."""
    a, b = lab.add_copy_job(), lab.add_copy_job()
    export = lab.add_export()
    for _ in range(3):
        api.get(f"vector/v2/products/{a.product_id}/search/copy/status")
    api.get(f"vector/v2/products/{b.product_id}/search/copy/status")
    api.get(f"storage/v1/data/get/{export.key}")
    assert server.stats.count(route=COPY, task=a.product_id) == 3
    assert server.stats.count(route=COPY, task=b.product_id) == 1
    assert server.stats.count(route=DATA, task=export.export_id) == 1
    routes = server.simulation.stats_snapshot()["routes"]
    assert routes[f"GET /descarteslabs/{COPY}"] == 4


def test_control_api_scripts_describes_and_clears(
    server: SimulatorServer, lab: DescartesLabsSimulator, control: httpx.Client
) -> None:
    """One POST scripts jobs and exports by kind; bad specs are 422; GET describes."""
    specs = [
        {"kind": "copy", "product_id": "sim:c"},
        {"kind": "delete", "product_id": "sim:d", "errors": ["e"]},
        {"kind": "export", "product_id": "sim:e", "export_id": "x1", "features": 2},
    ]
    created = control.post("descarteslabs/tasks", json=specs)
    assert created.status_code == 201
    tasks = created.json()["tasks"]
    assert [t["kind"] for t in tasks] == ["copy", "delete", "export"]
    assert tasks[2]["sha256"] == lab.exports["x1"].sha256
    shown = control.get("descarteslabs/tasks/x1").json()
    assert shown["document"]["data"]["attributes"]["status"] == "SUCCESS"
    assert control.get("descarteslabs/tasks/sim:d").json()["document"]["data"]["type"] == (
        "delete_job"
    )
    bad = control.post("descarteslabs/tasks", json=[{"kind": "copy", "outcome": "aborted"}])
    assert bad.status_code == 422
    assert control.post("descarteslabs/tasks", json=[{"kind": "move"}]).status_code == 422
    assert control.delete("descarteslabs/tasks").status_code == 200
    assert control.get("descarteslabs/tasks/x1").status_code == 404
    assert control.put("descarteslabs/config", json={"token_ttl": 30}).json()["token_ttl"] == 30


def test_add_task_scripts_any_kind_and_says_how_to_register_it(
    lab: DescartesLabsSimulator,
) -> None:
    """add_task(kind=...) builds the right job, whose registration names the ids to track."""
    export = lab.add_task("export", product_id="sim:p", export_id="e-1")
    delete = lab.add_task("delete", product_id="sim:q")
    assert export.registration == {
        "provider": "descarteslabs",
        "remote_id": "e-1",
        "params": {"kind": "export", "product_id": "sim:p"},
    }
    assert delete.registration["params"] == {"kind": "delete"}
    assert lab.deletes["sim:q"] is delete
    with pytest.raises(ValueError, match="kind"):
        lab.add_task("move")
