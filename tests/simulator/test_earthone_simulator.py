"""The EarthOne simulator is as strict as the platform the SDK knows: auth required and
expiring, 404 for unknown ids, paging as the SDK pages, signed URLs that refuse our token, and a
control API to script it."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskwarden.simulator.earthone import EarthOneConfig, EarthOneSimulator
from taskwarden.simulator.server import SimulatorServer


@pytest.fixture
def cloud(server: SimulatorServer) -> EarthOneSimulator:
    server.earthone.configure(EarthOneConfig().model_dump())
    return server.earthone


@pytest.fixture
def http(server: SimulatorServer) -> Iterator[httpx.Client]:
    """A plain client at the simulator's EarthOne root, holding no token."""
    with httpx.Client(base_url=f"{server.url}/earthone", timeout=5) as client:
        yield client


@pytest.fixture
def authed(http: httpx.Client, cloud: EarthOneSimulator) -> httpx.Client:
    """The same client with a JWT bought at iam/token."""
    answer = http.post("/iam/token", json={"client_id": "sim-client", "grant_type": "refresh_token",
                                           "refresh_token": "sim-refresh-token"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return http


def test_every_compute_and_catalog_call_needs_a_token(
    http: httpx.Client, cloud: EarthOneSimulator
) -> None:
    """No bearer token: 401 in each service's error shape, counted."""
    job = cloud.add_job()
    blob = f"compute/{cloud.namespace}/{job.function_id}/{job.job_id}"
    for path in (f"/compute/v1/jobs/{job.job_id}", "/compute/v1/jobs",
                 f"/compute/v1/functions/{job.function_id}"):  # fmt: skip
        answer = http.get(path)
        assert (answer.status_code, answer.json()) == (401, {"detail": "Missing bearer token"})
    answer = http.get(f"/metadata/v1/catalog/v2/storage/{blob}")
    assert answer.status_code == 401 and answer.json()["errors"][0]["status"] == "401"
    assert cloud.counters["unauthorized"] == 4


def test_tokens_carry_the_claims_the_sdk_reads_and_expire(
    server: SimulatorServer, authed: httpx.Client, cloud: EarthOneSimulator
) -> None:
    """The JWT names userid, org and aud; once its exp passes, calls are refused."""
    from taskwarden.providers.bearer import jwt_claims

    token = authed.headers["Authorization"].split()[1]
    claims = jwt_claims(token)
    assert claims is not None
    assert (claims["userid"], claims["org"], claims["aud"]) == (
        "simuserhash",
        "sim-org",
        "sim-client",
    )
    assert claims["exp"] - claims["iat"] == pytest.approx(3600, abs=1)
    job = cloud.add_job()
    assert authed.get(f"/compute/v1/jobs/{job.job_id}").status_code == 200
    server.clock.advance(3601)
    answer = authed.get(f"/compute/v1/jobs/{job.job_id}")
    assert (answer.status_code, answer.json()["detail"]) == (401, "Token has expired")


def test_a_wrong_refresh_token_is_refused(http: httpx.Client, cloud: EarthOneSimulator) -> None:
    """invalid_grant for an unknown refresh token, nothing issued."""
    answer = http.post("/iam/token", json={"client_id": "sim-client", "grant_type": "refresh_token",
                                           "refresh_token": "guess"})  # fmt: skip
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_grant")
    assert cloud.counters == {"refused": 1}


@pytest.mark.parametrize(
    "path",
    [
        "/compute/v1/jobs/nope",
        "/compute/v1/jobs/nope/log",
        "/compute/v1/functions/nope",
        "/metadata/v1/catalog/v2/storage/compute/sim-org%3Asimuserhash/fn/nope",
        "/metadata/v1/catalog/v2/storage/download/compute/sim-org%3Asimuserhash/fn/nope",
    ],
)
def test_unknown_ids_are_404(authed: httpx.Client, path: str) -> None:
    """Jobs, logs, functions and blobs the platform does not have are 404."""
    assert authed.get(path).status_code == 404


def test_no_log_and_no_blob_before_the_job_ran_and_succeeded(
    server: SimulatorServer, authed: httpx.Client, cloud: EarthOneSimulator
) -> None:
    """A pending job has no log (404, a guess); its result blob appears only on success."""
    job = cloud.add_job(pending_seconds=10, running_seconds=10, log_lines=["a", "b"])
    blob = (
        f"/metadata/v1/catalog/v2/storage/compute/{cloud.namespace}/{job.function_id}/{job.job_id}"
    )
    assert authed.get(f"/compute/v1/jobs/{job.job_id}/log").status_code == 404
    server.clock.advance(15)
    assert authed.get(blob).status_code == 404
    server.clock.advance(10)
    rows = [
        json.loads(line)
        for line in authed.get(f"/compute/v1/jobs/{job.job_id}/log").text.splitlines()
    ]
    assert [row["log"] for row in rows] == ["a", "b"]
    assert all(row["date"].endswith("Z") for row in rows)
    attributes = authed.get(blob).json()["data"]["attributes"]
    assert (attributes["size_bytes"], attributes["hash"]) == (1024, job.result_md5)


def test_later_pages_carry_only_the_cursor(authed: httpx.Client, cloud: EarthOneSimulator) -> None:
    """The first page takes the query; the cursor encodes it all, and is refused with other
    parameters or when it does not decode."""
    function = cloud.add_function(jobs=5)
    where = json.dumps([{"name": "function_id", "op": "eq", "val": function.function_id}])
    first = authed.get("/compute/v1/jobs", params={"filter": where, "page_size": 2}).json()
    assert [job["id"] for job in first["data"]] == function.jobs[:2]
    cursor = first["meta"]["page_cursor"]
    second = authed.get("/compute/v1/jobs", params={"page_cursor": cursor}).json()
    third = authed.get("/compute/v1/jobs", params={"page_cursor": second["meta"]["page_cursor"]})
    assert [job["id"] for job in second["data"] + third.json()["data"]] == function.jobs[2:]
    assert third.json()["meta"] == {"page_cursor": None, "total": 5}
    mixed = authed.get("/compute/v1/jobs", params={"page_cursor": cursor, "page_size": 2})
    assert mixed.status_code == 400 and "cannot be combined" in mixed.json()["detail"]
    assert authed.get("/compute/v1/jobs", params={"page_cursor": "garbage"}).status_code == 400


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": 0}, {"data": 0, "total": 6}),
        ({"limit": 4}, {"data": 4, "total": 6}),
        ({"filter": '[{"name":"status","op":"eq","val":"failure"}]'}, {"data": 2, "total": 2}),
        ({"filter": '[{"or":[{"name":"id","op":"eq","val":"f-00000"},'
                    '{"name":"id","op":"eq","val":"f-00005"}]}]'}, {"data": 2, "total": 2}),
        ({"filter": '[{"name":"exit_code","op":"gt","val":0}]'}, {"data": 2, "total": 2}),
    ],
)  # fmt: skip
def test_filters_and_limits_as_the_sdk_serializes_them(
    authed: httpx.Client, cloud: EarthOneSimulator, params: dict[str, Any], expected: dict[str, int]
) -> None:
    """eq, or-of-eq (``in_``), gt, and limit (0: the count alone) select as the SDK expects."""
    cloud.add_function(function_id="f", jobs=6, failures=2)
    page = authed.get("/compute/v1/jobs", params=params).json()
    assert {"data": len(page["data"]), "total": page["meta"]["total"]} == expected


def test_a_malformed_filter_is_refused(authed: httpx.Client) -> None:
    """An unknown field or operator is a 400 naming the clause."""
    for clause in ('[{"name":"colour","op":"eq","val":1}]', '[{"name":"id","op":"near","val":1}]'):
        answer = authed.get("/compute/v1/jobs", params={"filter": clause})
        assert answer.status_code == 400 and "invalid filter clause" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("nonzero", {"running": 1, "success": 2}),
        ("every", {"pending": 0, "running": 1, "cancel": 0, "canceling": 0, "success": 2,
                   "failure": 0, "timeout": 0, "canceled": 0}),
        ("active", {"pending": 0, "running": 1, "cancel": 0, "canceling": 0}),
    ],
)  # fmt: skip
def test_job_statistics_only_with_the_include(
    authed: httpx.Client, cloud: EarthOneSimulator, style: str, expected: dict[str, int]
) -> None:
    """job_statistics appear with include=job.statistics, counted in the configured style."""
    cloud.configure({"statistics_words": style})
    function = cloud.add_function(jobs=2)
    cloud.add_job(function_id=function.function_id, running_seconds=3600)
    path = f"/compute/v1/functions/{function.function_id}"
    assert "job_statistics" not in authed.get(path).json()
    doc = authed.get(path, params={"include": "job.statistics"}).json()
    assert doc["job_statistics"] == expected


def test_the_build_log_is_gzip(authed: httpx.Client, cloud: EarthOneSimulator) -> None:
    """GET functions/{id}/log serves gzip bytes that Function.build_log() inflates."""
    function = cloud.add_function(outcome="build_failed")
    answer = authed.get(f"/compute/v1/functions/{function.function_id}/log")
    assert gzip.decompress(answer.content) == function.build_log()


def test_signed_urls_are_signed_expire_and_refuse_a_token(
    authed: httpx.Client, cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """The resumable_url serves the bytes with no Authorization, refuses one, a changed
    signature, and an expired one."""
    job = cloud.add_job(file_size=5000)
    blob = f"compute/{cloud.namespace}/{job.function_id}/{job.job_id}"
    url = authed.get(f"/metadata/v1/catalog/v2/storage/download/{blob}").json()["data"][
        "attributes"]["resumable_url"]  # fmt: skip
    assert url.startswith(server.url)
    assert httpx.get(url).content == job.result()
    assert httpx.get(url, headers={"Authorization": "Bearer x"}).status_code == 400
    assert httpx.get(url.replace("signature=", "signature=0")).status_code == 403
    server.clock.advance(601)
    assert httpx.get(url).status_code == 400


def test_cancelling_a_running_job_takes_two_steps(
    authed: httpx.Client, cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """cancel, canceling, canceled over cancel_seconds; a second cancel changes nothing."""
    job = cloud.add_job(running_seconds=3600, cancel_seconds=10)
    path = f"/compute/v1/jobs/{job.job_id}"
    assert authed.post(f"{path}/cancel").json()["status"] == "cancel"
    server.clock.advance(6)
    assert authed.post(f"{path}/cancel").json()["status"] == "canceling"
    server.clock.advance(4)
    doc = authed.get(path).json()
    assert (doc["status"], doc["exit_code"]) == ("canceled", None)


def test_a_job_that_ends_before_its_cancel_completes_keeps_its_outcome(
    cloud: EarthOneSimulator, server: SimulatorServer
) -> None:
    """A running job may still succeed while being cancelled (the SDK's README)."""
    job = cloud.add_job(running_seconds=5, cancel_seconds=10)
    job.cancel(server.clock.now())
    server.clock.advance(6)
    assert job.status(server.clock.now()) == "success"


def test_the_control_api_scripts_and_describes(
    server: SimulatorServer, cloud: EarthOneSimulator
) -> None:
    """POST /_control/earthone/tasks adds jobs and functions; GET describes one."""
    with httpx.Client(base_url=server.url) as control:
        made = control.post("/_control/earthone/tasks", json=[
            {"kind": "function", "function_id": "fx", "jobs": 3},
            {"kind": "job", "job_id": "jx", "function_id": "fx", "outcome": "failure"},
        ]).json()  # fmt: skip
        assert [t["registration"]["remote_id"] for t in made["tasks"]] == ["function:fx", "job:jx"]
        shown = control.get("/_control/earthone/tasks/fx").json()
        assert shown["document"]["job_statistics"] == {"success": 3, "failure": 1}
        refused = control.post("/_control/earthone/tasks", json={"kind": "job", "job_id": "a/b"})
        assert refused.status_code == 422
        config = control.put("/_control/earthone/config", json={"token_ttl": 60}).json()
        assert config["token_ttl"] == 60
