"""The UP42 simulator over real HTTP: paths, envelopes, auth, scripts, results tarballs, signed
URLs, faults, counters, control API, and the official ``up42-py`` SDK pointed at it."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskwarden.simulator.server import SimulatorServer
from taskwarden.simulator.up42 import Up42Auth

TOKEN = "sim-token"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB = "projects/{project}/jobs/{job}"


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    server.up42.configure(Up42Auth().model_dump())
    return server


@pytest.fixture
def api(sim: SimulatorServer) -> Iterator[httpx.Client]:
    """A plain HTTP client on the UP42 base URL with the fixed simulator token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=sim.up42_url + "/", headers=headers, timeout=10) as client:
        yield client


def job_path(job: Any) -> str:
    return f"projects/{job.spec.project_id}/jobs/{job.id}"


def members(tgz: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        return {info.name: info for info in tar.getmembers()}


# --- v1 jobs and tasks -----------------------------------------------------------------------


def test_a_job_plays_its_words_in_the_v1_envelope(sim: SimulatorServer, api: httpx.Client) -> None:
    """NOT_STARTED, PENDING, RUNNING, SUCCEEDED, in {"data", "error": null} with SDK fields."""
    job = sim.up42.add_job(pending_seconds=10, running_seconds=100, name="dem")
    words = []
    for step in (0, 6, 10, 100):
        sim.clock.advance(step)
        body = api.get(job_path(job)).json()
        assert body["error"] is None
        words.append(body["data"]["status"])
    assert words == ["NOT_STARTED", "PENDING", "RUNNING", "SUCCEEDED"]
    data = body["data"]
    assert {"id", "name", "status", "createdAt", "startedAt", "finishedAt", "workflowName",
            "mode"} <= set(data)  # fmt: skip
    assert all(ISO.match(data[k]) for k in ("createdAt", "startedAt", "finishedAt"))


def test_the_old_spelling_and_error_word_can_be_scripted(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """not_started_word gives 'NOT STARTED'; failure_word gives ERROR on the job and last task."""
    waiting = sim.up42.add_job(pending_seconds=100, not_started_word="NOT STARTED")
    assert api.get(job_path(waiting)).json()["data"]["status"] == "NOT STARTED"
    failed = sim.up42.add_job(outcome="failure", failure_word="ERROR", tasks=[{}, {}])
    assert api.get(job_path(failed)).json()["data"]["status"] == "ERROR"
    tasks = api.get(job_path(failed) + "/tasks/").json()["data"]
    assert [t["status"] for t in tasks] == ["SUCCEEDED", "ERROR"]


def test_tasks_run_one_after_the_other(sim: SimulatorServer, api: httpx.Client) -> None:
    """A job's tasks/ list shows the SDK's JobTask fields; the running time is shared in turn."""
    job = sim.up42.add_job(running_seconds=300, tasks=[{"block": "a"}, {"block": "b"}, {}])
    sim.clock.advance(150)
    tasks = api.get(job_path(job) + "/tasks/").json()["data"]
    assert [t["status"] for t in tasks] == ["SUCCEEDED", "RUNNING", "NOT_STARTED"]
    assert tasks[1]["block"] == {"name": "b", "version": "1.0.0"}
    assert tasks[1]["name"] == "b:1" and tasks[1]["blockVersion"] == "1.0.0"
    assert tasks[0]["finishedAt"] is not None and tasks[2]["startedAt"] is None


def test_cancel_goes_through_cancelling(sim: SimulatorServer, api: httpx.Client) -> None:
    """POST cancel/ answers 204; the job (and its running task) is CANCELLING, then CANCELLED."""
    job = sim.up42.add_job(outcome="never", cancelling_seconds=5)
    assert api.post(job_path(job) + "/cancel/").status_code == 204
    assert api.get(job_path(job)).json()["data"]["status"] == "CANCELLING"
    assert api.get(job_path(job) + "/tasks/").json()["data"][0]["status"] == "CANCELLING"
    sim.clock.advance(6)
    assert api.get(job_path(job)).json()["data"]["status"] == "CANCELLED"
    finished = sim.up42.add_job()
    api.post(job_path(finished) + "/cancel/")
    assert sim.up42.status(finished.id) == "SUCCEEDED"


def test_missing_jobs_tasks_and_other_projects_are_v1_404s(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """Unknown jobs, tasks and a job asked under another project are 404 v1 envelopes."""
    job = sim.up42.add_job()
    for path in (
        "projects/sim-project/jobs/nope",
        f"projects/other/jobs/{job.id}",
        f"{job_path(job)}/tasks/nope/logs",
    ):
        r = api.get(path)
        assert r.status_code == 404
        assert r.json()["data"] is None and r.json()["error"]["code"] == "NOT_FOUND"


# --- outputs ---------------------------------------------------------------------------------


def test_results_are_a_real_tgz_under_output_behind_an_unauthenticated_signed_url(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """downloads/results/ signs a URL on the simulator; the .tgz members sit under output/."""
    job = sim.up42.add_job(
        tasks=[{"members": [{"name": "a.tif", "size": 3000}, {"name": "d/b.json", "size": 10}]}]
    )
    body = api.get(job_path(job) + "/downloads/results/").json()
    url = body["data"]["url"]
    assert url.startswith(sim.up42_url + "/signed/")
    r = httpx.get(url)  # no Authorization header at all
    assert (r.status_code, r.headers["content-type"]) == (200, "application/x-gzip")
    found = members(r.content)
    assert set(found) == {"output", "output/a.tif", "output/d", "output/d/b.json"}
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        extracted = tar.extractfile("output/a.tif")
        assert extracted is not None
        digest = hashlib.sha256(extracted.read()).hexdigest()
    assert digest == job.results.results_sha256["a.tif"]
    assert httpx.get(url).content == r.content  # byte-identical every time


def test_signed_urls_expire_with_gcs_s_answer(sim: SimulatorServer, api: httpx.Client) -> None:
    """After url_ttl a signed URL answers 400 ExpiredToken (XML); a forged one 403."""
    job = sim.up42.add_job(url_ttl=30)
    url = api.get(job_path(job) + "/downloads/results/").json()["data"]["url"]
    sim.clock.advance(31)
    r = httpx.get(url)
    assert r.status_code == 400 and "<Code>ExpiredToken</Code>" in r.text
    assert httpx.get(url.replace("signature=", "signature=0")).status_code == 403


def test_expired_downloads_scripts_refusals_before_success(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """expired_downloads=2 makes the first two fetches expired, the third succeed."""
    job = sim.up42.add_job(expired_downloads=2)
    codes = [
        httpx.get(api.get(job_path(job) + "/downloads/results/").json()["data"]["url"]).status_code
        for _ in range(3)
    ]
    assert codes == [400, 400, 200]


def test_task_outputs_quicklooks_logs_and_data_json(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """Quicklooks list then bytes, a plain-text log, and a GeoJSON FeatureCollection."""
    job = sim.up42.add_job(tasks=[{"quicklooks": ["x.jpeg"], "quicklook_size": 100}])
    task = job.tasks[0]
    base = f"{job_path(job)}/tasks/{task.id}"
    assert api.get(f"{base}/outputs/quicklooks/").json() == {"data": ["x.jpeg"], "error": None}
    image = api.get(f"{base}/outputs/quicklooks/x.jpeg")
    assert hashlib.sha256(image.content).hexdigest() == task.quicklooks_sha256["x.jpeg"]
    log = api.get(f"{base}/logs")
    assert log.headers["content-type"].startswith("text/plain") and "done" in log.text
    geojson = api.get(f"{base}/outputs/data-json/").json()
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == 2
    assert api.get(f"{job_path(job)}/outputs/data-json/").json() == geojson


def test_outputs_of_an_unfinished_job_are_404(sim: SimulatorServer, api: httpx.Client) -> None:
    """Results and data-json exist only once the job (or task) has succeeded."""
    job = sim.up42.add_job(outcome="never")
    assert api.get(job_path(job) + "/downloads/results/").status_code == 404
    assert api.get(job_path(job) + "/outputs/data-json/").status_code == 404


# --- v2 processing ---------------------------------------------------------------------------


def test_a_processing_job_walks_its_words_and_settles(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """created → licensed → valid → accepted → running → successful → captured, SDK fields."""
    job = sim.up42.add_processing(pending_seconds=40, running_seconds=10, settle_seconds=5)
    words = []
    for step in (0, 10, 10, 10, 10, 10, 5):
        sim.clock.advance(step)
        words.append(api.get(f"v2/processing/jobs/{job.id}").json()["status"])
    assert words == [
        "created", "licensed", "valid", "accepted", "running", "successful", "captured"
    ]  # fmt: skip
    doc = api.get(f"v2/processing/jobs/{job.id}").json()
    assert {"processID", "jobID", "accountID", "workspaceID", "definition", "results",
            "creditConsumption", "status", "created", "started", "finished", "updated"} == set(doc)  # fmt: skip
    assert doc["creditConsumption"]["credits"] == 100
    collection = httpx.get(doc["results"]["collection"], headers=api.headers).json()
    assert collection["id"] == job.spec.collection_id


@pytest.mark.parametrize(
    ("script", "word"),
    [
        ({"outcome": "failed", "release_seconds": 0}, "released"),
        ({"outcome": "failed", "release_seconds": 3600}, "failed"),
        ({"settle_seconds": None}, "successful"),
        ({"outcome": "invalid"}, "invalid"),
        ({"outcome": "rejected"}, "rejected"),
        ({"outcome": "unlicensed"}, "unlicensed"),
    ],
)
def test_processing_outcomes(
    sim: SimulatorServer, api: httpx.Client, script: dict[str, Any], word: str
) -> None:
    """Each outcome ends in its word; failures carry results.errors."""
    job = sim.up42.add_processing(**script)
    doc = api.get(f"v2/processing/jobs/{job.id}").json()
    assert doc["status"] == word
    if word != "successful":
        assert doc["results"]["errors"] == [
            {"name": "SimulatedError", "message": "simulated failure"}
        ]


def test_v2_errors_are_problem_documents(sim: SimulatorServer, api: httpx.Client) -> None:
    """A missing processing job is an RFC 7807 problem document."""
    r = api.get("v2/processing/jobs/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "about:blank", "title": "Not Found", "status": 404,
                        "detail": "Job nope not found"}  # fmt: skip


# --- auth ------------------------------------------------------------------------------------


def test_password_and_client_credential_grants(sim: SimulatorServer) -> None:
    """Both grants issue a token in both shapes; wrong secrets are OAuth 401s."""
    token_url = f"{sim.up42_url}/oauth/token"
    form = {"grant_type": "password", "username": "sim-user", "password": "sim-password"}
    body = httpx.post(token_url, data=form).json()
    assert body["access_token"] == body["data"]["accessToken"] and body["expires_in"] == 300
    basic = httpx.post(
        token_url, data={"grant_type": "client_credentials"}, auth=("sim-project", "sim-api-key")
    )
    assert basic.status_code == 200
    wrong = httpx.post(token_url, data={**form, "password": "x"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_grant")
    sim.up42.configure({"token_shape": "new", "announced_ttl": 0})
    assert set(httpx.post(token_url, data=form).json()) == {"access_token", "token_type", "scope"}


def test_tokens_expire_and_can_be_revoked(sim: SimulatorServer) -> None:
    """An issued token works until token_ttl, then 401 'Token expired'; revoke ends it now."""
    sim.up42.configure({"token_ttl": 10})
    job = sim.up42.add_job()
    form = {"grant_type": "password", "username": "sim-user", "password": "sim-password"}
    token = httpx.post(f"{sim.up42_url}/oauth/token", data=form).json()["access_token"]
    url = f"{sim.up42_url}/{job_path(job)}"
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url, headers=headers).status_code == 200
    sim.clock.advance(11)
    r = httpx.get(url, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["message"] == "Token expired"
    assert httpx.get(url).status_code == 401
    assert sim.up42.rejected == 2


KEYCLOAK_TOKEN = "realms/public/protocol/openid-connect/token"
SDK_FORM = {"grant_type": "password", "username": "sim-user", "password": "sim-password",
            "client_id": "up42-sdk", "scope": "openid"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "as_json", "status", "error"),
    [
        ({"client_id": None, "scope": None}, False, 401, "invalid_client"),  # the v1-era form
        ({"client_id": "up42-api"}, False, 401, "invalid_client"),
        ({"grant_type": None}, False, 400, "invalid_request"),
        ({}, True, 400, "invalid_request"),  # a JSON body is no form
        ({"grant_type": "client_credentials"}, False, 400, "unsupported_grant_type"),
        ({"password": "wrong"}, False, 401, "invalid_grant"),
    ],
)
def test_keycloak_refuses_what_keycloak_refuses(
    sim: SimulatorServer, change: dict[str, Any], as_json: bool, status: int, error: str
) -> None:
    """The Keycloak token route wants a form with grant_type and the SDK's client id, and a
    valid password; each refusal is Keycloak's status and OAuth error."""
    form = {k: v for k, v in (SDK_FORM | change).items() if v is not None}
    url = f"{sim.up42_url}/{KEYCLOAK_TOKEN}"
    r = httpx.post(url, json=form) if as_json else httpx.post(url, data=form)
    assert (r.status_code, r.json()["error"]) == (status, error)
    assert "error_description" in r.json() and sim.up42.token_grants == 0


def test_keycloak_answers_the_sdks_form_with_an_expiring_token(sim: SimulatorServer) -> None:
    """The SDK's form buys Keycloak's body (no v1 data envelope); the token dies at token_ttl
    and userinfo then says invalid_token."""
    sim.up42.configure({"token_ttl": 60})
    body = httpx.post(f"{sim.up42_url}/{KEYCLOAK_TOKEN}", data=SDK_FORM).json()
    assert {"access_token", "expires_in", "refresh_token", "token_type", "id_token"} <= set(body)
    assert "data" not in body and (body["token_type"], body["expires_in"]) == ("Bearer", 60)
    userinfo = f"{sim.up42_url}/realms/public/protocol/openid-connect/userinfo"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(userinfo, headers=headers).json()["sub"] == "sim-workspace"
    sim.clock.advance(61)
    late = httpx.get(userinfo, headers=headers)
    assert (late.status_code, late.json()["error"]) == (401, "invalid_token")


def test_signed_urls_refuse_a_bearer_token(sim: SimulatorServer, api: httpx.Client) -> None:
    """A signed results URL fetched with an Authorization header is refused (400)."""
    job = sim.up42.add_job()
    url = api.get(job_path(job) + "/downloads/results/").json()["data"]["url"]
    r = httpx.get(url, headers={"Authorization": "Bearer sim-token"})
    assert r.status_code == 400 and "<Code>InvalidArgument</Code>" in r.text
    assert httpx.get(url).status_code == 200


def test_signed_urls_can_point_at_another_host(sim: SimulatorServer, api: httpx.Client) -> None:
    """storage_host puts signed URLs on another origin of the same server."""
    sim.up42.configure({"storage_host": "localhost"})
    job = sim.up42.add_job()
    url = api.get(job_path(job) + "/downloads/results/").json()["data"]["url"]
    assert url.startswith(f"http://localhost:{sim.port}/up42/signed/")
    assert httpx.get(url).status_code == 200


def test_zip_results_and_v1_credits(sim: SimulatorServer, api: httpx.Client) -> None:
    """results_format=zip serves a zip under output/ (a symlink by its Unix mode); credits/
    answers creditsUsed."""
    job = sim.up42.add_job(credits=42, tasks=[{"results_format": "zip", "members": [
        {"name": "a.tif", "size": 100}, {"name": "latest", "kind": "symlink", "target": "a.tif"},
    ]}])  # fmt: skip
    url = api.get(job_path(job) + "/downloads/results/").json()["data"]["url"]
    assert url.split("?")[0].endswith("/output.zip")
    with zipfile.ZipFile(io.BytesIO(httpx.get(url).content)) as archive:
        names = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        assert (
            hashlib.sha256(archive.read("output/a.tif")).hexdigest()
            == (job.results.results_sha256["a.tif"])
        )
    assert stat.S_ISLNK(names["output/latest"]) and stat.S_ISREG(names["output/a.tif"])
    credits = api.get(job_path(job) + "/credits").json()
    assert credits == {"data": {"creditsUsed": 42}, "error": None}


def test_result_items_page_strictly(sim: SimulatorServer, api: httpx.Client) -> None:
    """Items come page_size at a time with an absolute next link; a bad limit or token is a
    400 problem document; no collection before the job delivered."""
    waiting = sim.up42.add_processing(running_seconds=100)
    items = f"v2/assets/stac/collections/{waiting.spec.collection_id}/items"
    assert api.get(items).status_code == 404
    job = sim.up42.add_processing(settle_seconds=None, page_size=2, items=[{}, {}, {}])
    items = f"v2/assets/stac/collections/{job.spec.collection_id}/items"
    first = api.get(items).json()
    (following,) = [link["href"] for link in first["links"] if link["rel"] == "next"]
    assert following.startswith(sim.up42_url) and len(first["features"]) == 2
    last = httpx.get(following, headers=api.headers).json()
    assert len(last["features"]) == 1 and not [x for x in last["links"] if x["rel"] == "next"]
    for query in ("limit=0", "limit=x", "token=bogus"):
        r = api.get(f"{items}?{query}")
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


def test_error_entries_have_exactly_the_sdks_fields(sim: SimulatorServer) -> None:
    """results.errors entries with a key 4.3's ValidationError lacks are refused at scripting."""
    with pytest.raises(ValueError, match="code"):
        sim.up42.add_processing(errors=[{"name": "E", "message": "m", "code": 3}])


# --- faults, counters, control API -----------------------------------------------------------


def test_faults_and_counters_per_job(sim: SimulatorServer, api: httpx.Client) -> None:
    """Faults scoped to a job's route fire there only; counters split by route and job."""
    a, b = sim.up42.add_job(), sim.up42.add_job()
    sim.inject(kind="status", status=503, task=a.id, route=JOB, count=2)
    sim.inject(kind="unknown_status", task=b.id, word="PAUSED")
    assert [api.get(job_path(a)).status_code for _ in range(3)] == [503, 503, 200]
    assert api.get(job_path(b)).json()["data"]["status"] == "PAUSED"
    assert sim.stats.count(route=JOB, task=a.id) == 3
    assert sim.stats.count(route=JOB, task=b.id) == 1
    routes = sim.simulation.stats_snapshot()["routes"]
    assert routes["GET /up42/projects/{project}/jobs/{job}"] == 4


def test_control_api_adds_shows_and_configures(sim: SimulatorServer) -> None:
    """POST /_control/up42/tasks adds jobs and processing jobs; GET shows checksums."""
    with httpx.Client(base_url=f"{sim.url}/_control/up42/", timeout=10) as control:
        created = control.post(
            "tasks", json=[{"id": "job-1", "tasks": [{"id": "task-1"}]},
                           {"kind": "processing", "id": "proc-1"}]
        )  # fmt: skip
        assert created.status_code == 201
        assert [t["id"] for t in created.json()["tasks"]] == ["job-1", "proc-1"]
        shown = control.get("tasks/job-1").json()
        assert shown["document"]["status"] == "SUCCEEDED"
        assert shown["results_sha256"] == sim.up42.jobs["job-1"].results.results_sha256
        assert control.get("tasks/task-1").json()["document"]["id"] == "task-1"
        assert control.get("tasks/proc-1").json()["document"]["jobID"] == "proc-1"
        assert control.post("tasks", json={"outcome": "maybe"}).status_code == 422
        assert control.put("config", json={"token_ttl": 5}).json()["token_ttl"] == 5


# --- the legacy SDK as the judge of v1 fidelity (4.3: tests/simulator/test_up42_sdk.py) --------


LEGACY_PYTHON = os.environ.get("TASKWARDEN_UP42_LEGACY_PYTHON")


@pytest.mark.skipif(
    not LEGACY_PYTHON,
    reason="set TASKWARDEN_UP42_LEGACY_PYTHON to a Python with up42-py==0.34.1 installed",
)
def test_the_legacy_sdk_tracks_downloads_and_cancels_v1_jobs(sim: SimulatorServer) -> None:
    """up42-py 0.34.1 (its own environment): both grants, Job.track_status, results unpacked
    byte for byte (tgz, zip, links skipped), JobTask info/results/quicklooks, logs, cancel_job,
    failure and cancellation
    (tests/simulator/up42_legacy_sdk.py)."""
    assert LEGACY_PYTHON is not None
    script = Path(__file__).with_name("up42_legacy_sdk.py")
    env = {**os.environ, "OAUTHLIB_INSECURE_TRANSPORT": "1"}  # the simulator is plain http
    done = subprocess.run(
        [LEGACY_PYTHON, str(script), sim.up42_url],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "agrees with the simulator" in done.stdout
    assert sys.executable != LEGACY_PYTHON
