"""The generic simulator over real HTTP: shapes, scripts, auth, signed URLs, faults, counters
and the control API. (There is no real SDK or service behind it to check fidelity against.)"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskwarden.simulator.generic import GenericAuth
from taskwarden.simulator.server import SimulatorServer

KEY = {"X-Api-Key": "sim-key"}


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    server.generic.auth = GenericAuth()
    server.generic.issued.clear()
    return server


@pytest.fixture
def api(sim: SimulatorServer) -> Iterator[httpx.Client]:
    """A plain client on the generic root with the default API key."""
    with httpx.Client(base_url=sim.generic_url, headers=KEY, timeout=10) as client:
        yield client


@pytest.fixture
def bare(sim: SimulatorServer) -> Iterator[httpx.Client]:
    """A client without credentials."""
    with httpx.Client(base_url=sim.generic_url, timeout=10) as client:
        yield client


def test_a_job_plays_its_script_in_the_default_shape(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """queued, then in_progress with a rising percent, then completed with its outputs listed."""
    job = sim.generic.add_task(title="ndvi", pending_seconds=10, running_seconds=100)
    doc = api.get(f"api/jobs/{job.id}").json()
    assert doc == {"data": {"id": job.id, "attributes": {
        "title": "ndvi", "phase": "queued", "percent": 0.0, "error": {"message": None},
        "outputs": []}}}  # fmt: skip
    sim.clock.advance(60)
    attributes = api.get(f"api/jobs/{job.id}").json()["data"]["attributes"]
    assert (attributes["phase"], attributes["percent"]) == ("in_progress", pytest.approx(50, abs=1))
    sim.clock.advance(60)
    attributes = api.get(f"api/jobs/{job.id}").json()["data"]["attributes"]
    assert (attributes["phase"], attributes["percent"]) == ("completed", 100.0)
    assert attributes["outputs"] == [
        {"href": f"{sim.generic_url}api/jobs/{job.id}/files/output.bin", "filename": "output.bin"}
    ]


@pytest.mark.parametrize(
    ("shape", "path", "expected"),
    [
        ({"status_path": "state", "words": {"pending": "P", "running": "R", "succeeded": "OK",
          "failed": "KO", "cancelled": "X"}}, ("state",), "OK"),
        ({"progress_style": "fraction", "progress_path": "p"}, ("p",), 1.0),
        ({"progress_style": "steps", "progress_path": "s.done", "progress_total_path": "s.all"},
         ("s",), {"done": 100, "all": 100}),
        ({"output_url_key": None, "outputs_path": "files"}, ("files", 0), "URL"),
        ({"relative_urls": True}, ("data", "attributes", "outputs", 0, "href"), "/generic/api/"),
        ({"id_path": None, "name_path": None, "progress_path": None, "error_path": None,
          "outputs_path": None}, (), {"data": {"attributes": {"phase": "completed"}}}),
    ],
)  # fmt: skip
def test_shapes_put_each_value_where_they_say(
    sim: SimulatorServer,
    api: httpx.Client,
    shape: dict[str, Any],
    path: tuple[Any, ...],
    expected: Any,
) -> None:
    """A shape moves the word, progress, outputs and the rest to other places and forms."""
    job = sim.generic.add_task(shape=shape)
    value: Any = api.get(f"api/jobs/{job.id}").json()
    for step in path:
        value = value[step]
    if expected == "URL":
        assert value.startswith("http://") and value.endswith("/output.bin")
    elif isinstance(expected, str) and expected.startswith("/"):
        assert value.startswith(expected)
    else:
        assert value == expected


@pytest.mark.parametrize(
    ("script", "error"),
    [({"outcome": "failure", "failure_message": "no band 4"}, "no band 4"),
     ({"outcome": "aborted"}, "canceled on request"),
     ({"succeeded_with_error": "3 tiles skipped"}, "3 tiles skipped"), ({}, None)],
)  # fmt: skip
def test_errors_are_shown_at_the_error_path(
    sim: SimulatorServer, api: httpx.Client, script: dict[str, Any], error: str | None
) -> None:
    """Failures, cancellations and successes-with-errors put their text at the error path."""
    job = sim.generic.add_task(**script)
    assert api.get(f"api/jobs/{job.id}").json()["data"]["attributes"]["error"]["message"] == error


def test_outputs_are_deterministic_and_listed_only_on_success(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """Each output's bytes hash to the checksum the task announces; none before success."""
    job = sim.generic.add_task(
        running_seconds=50,
        file_name="a.tif",
        file_size=70_000,
        extra_outputs=[{"name": "b.csv", "size": 33}],
    )
    assert api.get(f"api/jobs/{job.id}/files/a.tif").status_code == 404
    sim.clock.advance(60)
    for name, size in (("a.tif", 70_000), ("b.csv", 33)):
        got = api.get(f"api/jobs/{job.id}/files/{name}")
        assert (got.status_code, len(got.content)) == (200, size)
        assert hashlib.sha256(got.content).hexdigest() == job.checksums[name]
        assert got.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert job.checksums["a.tif"] == job.sha256
    assert api.get(f"api/jobs/{job.id}/files/c.txt").status_code == 404


def test_the_project_route_checks_the_project(sim: SimulatorServer, api: httpx.Client) -> None:
    """A job is found under its own project only."""
    job = sim.generic.add_task(project="alpha")
    assert api.get(f"api/projects/alpha/jobs/{job.id}").status_code == 200
    wrong = api.get(f"api/projects/beta/jobs/{job.id}")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (404, "not_found")


def test_cancel_ends_a_running_job_and_not_a_finished_one(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """POST cancel turns a running job canceled (202); a finished one stays as it was."""
    running, done = sim.generic.add_task(outcome="never"), sim.generic.add_task()
    assert api.post(f"api/jobs/{running.id}/cancel").status_code == 202
    assert sim.generic.state(running.id) == "canceled"
    api.post(f"api/jobs/{done.id}/cancel")
    assert sim.generic.state(done.id) == "completed"


@pytest.mark.parametrize(
    ("headers", "url", "status", "reason"),
    [
        ({}, "api/jobs/{id}", 401, "no_credentials"),
        ({"X-Api-Key": "nope"}, "api/jobs/{id}", 401, "bad_key"),
        ({"Authorization": "Bearer nope"}, "api/jobs/{id}", 401, "bad_token"),
        ({"Authorization": "Bearer sim-token"}, "api/jobs/{id}", 200, None),
        ({}, "api/jobs/{id}?api_key=sim-key", 200, None),
    ],
)
def test_credentials_are_checked_and_refusals_counted(
    sim: SimulatorServer,
    bare: httpx.Client,
    headers: dict[str, str],
    url: str,
    status: int,
    reason: str | None,
) -> None:
    """An API key (header or query) or a bearer token is needed; refusals count by reason."""
    job = sim.generic.add_task()
    got = bare.get(url.format(id=job.id), headers=headers)
    assert got.status_code == status
    if reason:
        assert got.headers["www-authenticate"] == "Bearer"
        assert got.json()["error"]["code"] == reason
        assert sim.generic.rejected(reason, job.id) == 1
    assert sim.generic.rejected() == (1 if reason else 0)


def test_auth_can_be_switched_off(sim: SimulatorServer, bare: httpx.Client) -> None:
    """With auth_required off, anyone may read."""
    sim.generic.configure({"auth_required": False})
    assert bare.get(f"api/jobs/{sim.generic.add_task().id}").status_code == 200


def test_token_endpoint_issues_expiring_tokens(sim: SimulatorServer, bare: httpx.Client) -> None:
    """Client credentials give a token that works until token_ttl simulation seconds pass."""
    sim.generic.configure({"token_ttl": 30})
    job = sim.generic.add_task()
    got = bare.post(
        "oauth/token", data={"grant_type": "client_credentials"}, auth=("sim-client", "sim-secret")
    )
    body = got.json()
    assert (got.status_code, body["token_type"], body["expires_in"]) == (200, "Bearer", 30)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert bare.get(f"api/jobs/{job.id}", headers=bearer).status_code == 200
    sim.clock.advance(31)
    expired = bare.get(f"api/jobs/{job.id}", headers=bearer)
    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "expired_token")


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        (
            {
                "data": {
                    "grant_type": "client_credentials",
                    "client_id": "sim-client",
                    "client_secret": "sim-secret",
                }
            },
            200,
            None,
        ),
        (
            {
                "json": {
                    "grant_type": "client_credentials",
                    "client_id": "sim-client",
                    "client_secret": "sim-secret",
                }
            },
            200,
            None,
        ),
        (
            {"data": {"grant_type": "client_credentials"}, "auth": ("sim-client", "bad")},
            401,
            "invalid_client",
        ),
        (
            {"data": {"grant_type": "password"}, "auth": ("sim-client", "sim-secret")},
            400,
            "unsupported_grant_type",
        ),
    ],
)
def test_token_endpoint_forms_and_refusals(
    bare: httpx.Client, kwargs: dict[str, Any], status: int, error: str | None
) -> None:
    """Credentials in a form, JSON or Basic; OAuth2 error bodies for a bad client or grant."""
    got = bare.post("oauth/token", **kwargs)
    assert got.status_code == status
    assert got.json().get("error") == error
    if status == 200:
        assert "expires_in" not in got.json()  # no token_ttl: tokens never expire


def test_announce_ttl_off_hides_expires_in(sim: SimulatorServer, bare: httpx.Client) -> None:
    """With announce_ttl off, tokens still expire but the answer does not say when."""
    sim.generic.configure({"token_ttl": 5, "announce_ttl": False})
    got = bare.post(
        "oauth/token", data={"grant_type": "client_credentials"}, auth=("sim-client", "sim-secret")
    )
    assert "expires_in" not in got.json()


def storage_url(api: httpx.Client, job_id: str) -> str:
    url: str = api.get(f"api/jobs/{job_id}").json()["data"]["attributes"]["outputs"][0]["href"]
    return url


def test_signed_urls_live_on_another_host_and_expire(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """Storage URLs are signed, on storage_host when set, and refused once expired."""
    sim.generic.configure({"signed_url_ttl": 60})
    job = sim.generic.add_task(
        file_size=100, shape={"outputs_at": "storage", "storage_host": "localhost"}
    )
    url = storage_url(api, job.id)
    assert url.startswith(
        f"http://localhost:{sim.port}/generic/storage/{job.id}/output.bin?expires="
    )
    with httpx.Client(timeout=10) as plain:
        assert hashlib.sha256(plain.get(url).content).hexdigest() == job.sha256
        assert plain.get(url.replace("sig=", "sig=0")).status_code == 403
        sim.clock.advance(61)
        expired = plain.get(url)
    assert (expired.status_code, expired.json()["error"]["message"]) == (403, "Request has expired")
    assert sim.generic.rejected("expired_url", job.id) == 1


@pytest.mark.parametrize(
    "credentials",
    [{"headers": KEY}, {"headers": {"Authorization": "Bearer x"}}, {"params": {"api_key": "k"}}],
)
def test_signed_urls_refuse_credentials(
    sim: SimulatorServer, api: httpx.Client, credentials: dict[str, Any]
) -> None:
    """Like object storage, a signed URL with credentials beside it is a 400."""
    job = sim.generic.add_task(file_size=10, shape={"outputs_at": "storage"})
    with httpx.Client(timeout=10) as plain:
        got = plain.get(storage_url(api, job.id), **credentials)
    assert (got.status_code, got.json()["error"]["message"]) == (
        400,
        "Only one auth mechanism allowed",
    )
    assert sim.generic.rejected("credentials_on_signed_url", job.id) == 1


def test_redirect_outputs_answer_302_to_storage(sim: SimulatorServer, api: httpx.Client) -> None:
    """With outputs_at=redirect the API's file URL sends the client on to a signed URL."""
    job = sim.generic.add_task(
        file_size=10, shape={"outputs_at": "redirect", "storage_host": "localhost"}
    )
    got = api.get(f"api/jobs/{job.id}/files/output.bin")
    assert got.status_code == 302
    assert got.headers["location"].startswith(f"http://localhost:{sim.port}/generic/storage/")


def test_faults_hit_their_routes_and_requests_are_counted(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    """Faults apply per job and route; every request is counted by route and job."""
    job, other = sim.generic.add_task(), sim.generic.add_task()
    sim.inject(kind="unknown_status", task=job.id, word="on_hold")
    sim.inject(kind="status", status=502, task=other.id, route="api/jobs/{job_id}")
    assert api.get(f"api/jobs/{job.id}").json()["data"]["attributes"]["phase"] == "on_hold"
    failed = api.get(f"api/jobs/{other.id}")
    assert (failed.status_code, failed.json()["error"]["message"]) == (502, "injected fault")
    assert api.get(f"api/jobs/{job.id}").json()["data"]["attributes"]["phase"] == "completed"
    assert sim.stats.count(platform="generic", route="api/jobs/{job_id}", task=job.id) == 2
    assert sim.stats.count(platform="generic", task=other.id) == 1


def test_control_api_adds_describes_and_configures(sim: SimulatorServer) -> None:
    """Jobs can be scripted, inspected and auth configured over /_control/generic/."""
    with httpx.Client(base_url=f"{sim.url}/_control/generic/", timeout=10) as control:
        created = control.post(
            "tasks", json=[{"id": "job-1", "file_size": 10}, {"outcome": "failure"}]
        )
        assert created.status_code == 201 and created.json()["tasks"][0] == {"id": "job-1"}
        shown = control.get("tasks/job-1").json()
        assert shown["document"]["data"]["attributes"]["phase"] == "completed"
        assert shown["checksums"] == {"output.bin": sim.generic.tasks["job-1"].sha256}
        assert control.post("tasks", json={"id": "a/b"}).status_code == 422
        assert control.put("config", json={"api_keys": ["k2"]}).json()["api_keys"] == ["k2"]
        assert control.get("tasks/nope").status_code == 404
