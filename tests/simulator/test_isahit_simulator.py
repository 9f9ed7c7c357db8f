"""The isahit lab simulator over real HTTP: login, the paged task list and its filters, status
timelines with reopening, errors, faults, counters, control API, and the official ``isahitlab``
SDK pointed at it."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskwarden.simulator.isahit import IsahitAuth
from taskwarden.simulator.isahit_tasks import archive_bytes
from taskwarden.simulator.server import SimulatorServer

ACCESS = {"access_id": "sim-access-id", "secret_key": "sim-secret-key"}
PROJECT = "sim-project"
TASKS = "api/task-manager/tasks"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")  # JavaScript's toISOString()
ENVELOPE = {"docs", "totalDocs", "limit", "totalPages", "page", "pagingCounter", "hasPrevPage"}
ENVELOPE |= {"hasNextPage", "prevPage", "nextPage"}


@pytest.fixture
def lab(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator with isahit's default logins and token lifetime."""
    server.isahit.configure(IsahitAuth().model_dump())
    return server


def login(client: httpx.Client, **form: str) -> httpx.Response:
    return client.post("api/user-manager/auth/login", data=form or ACCESS)


@pytest.fixture
def api(lab: SimulatorServer) -> Iterator[httpx.Client]:
    """A plain HTTP client on the isahit base URL, logged in."""
    with httpx.Client(base_url=lab.isahit_url, timeout=10) as client:
        token = login(client).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def listing(api: httpx.Client, *pairs: tuple[str, str | int]) -> dict[str, Any]:
    params = [("projectId", PROJECT), *pairs]
    response = api.get(TASKS, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- login and tokens ------------------------------------------------------------------------


def test_login_answers_201_with_a_token_and_its_lifetime(lab: SimulatorServer) -> None:
    """The login is a form POST answered 201 {access_token, expires_in}, as the SDK demands."""
    lab.isahit.configure({"token_ttl": 600})
    with httpx.Client(base_url=lab.isahit_url) as client:
        response = login(client)
        assert response.status_code == 201
        body = response.json()
        assert set(body) == {"access_token", "expires_in"} and body["expires_in"] == 600
        refused = login(client, access_id="sim-access-id", secret_key="wrong")
        assert (refused.status_code, refused.json()) == (
            401,
            {"statusCode": 401, "message": "Unauthorized"},
        )
        missing = client.post("api/user-manager/auth/login", data={"access_id": "x"})
        assert missing.status_code == 400 and missing.json()["errorCode"] == 1001


def test_tokens_expire_on_the_simulation_clock(lab: SimulatorServer) -> None:
    """A token is refused with 401 once its expires_in has passed, and counted as refused."""
    lab.isahit.configure({"token_ttl": 60})
    with httpx.Client(base_url=lab.isahit_url) as client:
        token = login(client).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        params = {"projectId": PROJECT}
        assert client.get(TASKS, params=params, headers=headers).status_code == 200
        lab.clock.advance(61)
        assert client.get(TASKS, params=params, headers=headers).status_code == 401
        assert client.get(TASKS, params=params).status_code == 401
    assert lab.isahit.refused == 2


def test_expire_tokens_drops_every_token_issued(lab: SimulatorServer, api: httpx.Client) -> None:
    """expire_tokens() is a server restart: tokens that were good are refused at once."""
    assert api.get(TASKS, params={"projectId": PROJECT}).status_code == 200
    assert lab.isahit.expire_tokens() == 1
    assert api.get(TASKS, params={"projectId": PROJECT}).status_code == 401


# --- scripted lifecycle and documents ------------------------------------------------------------


def test_a_task_plays_its_words_and_is_reopened_by_script(
    lab: SimulatorServer, api: httpx.Client
) -> None:
    """configuring, pending, to-review, complete, back to pending, complete again, on the clock."""
    task = lab.isahit.add_task(
        configuring_seconds=5,
        pending_seconds=10,
        running_seconds=10,
        reopen_after=10,
        reopen_seconds=5,
    )
    seen = []
    for step in (0, 6, 6, 10, 10, 5):
        lab.clock.advance(step)
        doc = listing(api, ("taskIds", task.task_id))["docs"][0]
        seen.append(doc["status"])
        assert ISO.match(doc["createdAt"]) and ISO.match(doc["updatedAt"])
    assert seen == ["configuring", "pending", "to-review", "complete", "pending", "complete"]


def test_a_reviewed_task_documents_its_data_jobs_and_metrics(
    lab: SimulatorServer, api: httpx.Client
) -> None:
    """optionalFields add data (annotations, mask), jobs (with history) and metrics."""
    task = lab.isahit.add_task(name="cat.jpg", final_status="reviewed", annotations=2)
    plain = listing(api, ("taskIds", task.task_id))["docs"][0]
    assert set(plain) == {
        "_id", "name", "projectId", "batchId", "status", "resources", "properties",
        "createdAt", "updatedAt",
    }  # fmt: skip
    assert plain["status"] == "reviewed" and plain["properties"]["score"] in range(1, 6)
    fields = ("data", "data.mask", "jobs", "jobs.history", "metrics")
    full = listing(api, ("taskIds", task.task_id), *[("optionalFields", f) for f in fields])
    doc = full["docs"][0]
    assert len(doc["data"]["body"]["annotations"]) == 2
    assert doc["data"]["body"]["mask"].startswith("data:image/png;base64,")
    assert [(j["type"], j["status"]) for j in doc["jobs"]] == [
        ("annotation", "complete"),
        ("review", "complete"),
    ]
    assert doc["jobs"][0]["state"]["completedBy"]["email"].endswith("@sim.isahit.test")
    assert [h["status"] for h in doc["jobs"][0]["history"]] == ["pending", "complete"]
    assert doc["metrics"]["annotationsCount"] == 2
    expected = lab.isahit.archive_sha256(task.task_id, fields)
    assert hashlib.sha256(archive_bytes(doc)).hexdigest() == expected


def test_documents_are_deterministic_for_a_seed(lab: SimulatorServer) -> None:
    """Two tasks with one seed have the same annotations, so checksums can be predicted."""
    one = lab.isahit.add_task(seed="s1", task_id="a" * 24, batch_id="b1")
    two = lab.isahit.add_task(seed="s1", task_id="a" * 23 + "b", batch_id="b1")
    bodies = [lab.isahit.document(t.task_id, ["data"])["data"]["body"] for t in (one, two)]
    annotations = [[a["polygons"][0]["geometry"] for a in body["annotations"]] for body in bodies]
    assert annotations[0] == annotations[1] and annotations[0]


@pytest.mark.parametrize(
    "spec", [{"outcome": "failure"}, {"outcome": "aborted"}, {"configuring_seconds": 2}]
)
def test_impossible_scripts_are_refused(lab: SimulatorServer, spec: dict[str, Any]) -> None:
    """isahit has no failure nor cancellation, and configuring is part of pending."""
    with pytest.raises(ValueError, match=r"isahit|configuring"):
        lab.isahit.add_task(**spec)


def test_reset_and_to_review_send_a_final_task_back(
    lab: SimulatorServer, api: httpx.Client
) -> None:
    """PATCH …/reset reopens to pending and …/to-review to to-review; a pending task stays."""
    done = lab.isahit.add_task(reopen_seconds=100)
    waiting = lab.isahit.add_task(outcome="never")
    reset = api.patch(f"{TASKS}/{done.task_id}/reset", params={"projectId": PROJECT})
    assert (reset.status_code, reset.json()["status"]) == (200, "pending")
    lab.clock.advance(101)
    assert lab.isahit.status(done.task_id) == "complete"
    api.patch(f"{TASKS}/{done.task_id}/to-review", params={"projectId": PROJECT})
    assert lab.isahit.status(done.task_id) == "to-review"
    assert api.patch(f"{TASKS}/{waiting.task_id}/reset").json()["status"] == "to-review"
    assert api.patch(f"{TASKS}/nope/reset").status_code == 404


# --- the list: pages and filters ----------------------------------------------------------------


def test_pages_follow_mongoose_paginate(lab: SimulatorServer, api: httpx.Client) -> None:
    """250 tasks at limit 100 are three pages, with the envelope's counters and links."""
    batch = lab.isahit.add_batch(250)
    first = listing(api, ("batchIds", batch.batch_id), ("limit", 100), ("pagination", "true"))
    assert set(first) == ENVELOPE
    assert {k: first[k] for k in ENVELOPE - {"docs"}} == {
        "totalDocs": 250, "limit": 100, "totalPages": 3, "page": 1, "pagingCounter": 1,
        "hasPrevPage": False, "hasNextPage": True, "prevPage": None, "nextPage": 2,
    }  # fmt: skip
    last = listing(api, ("batchIds", batch.batch_id), ("limit", 100), ("page", 3))
    assert (len(last["docs"]), last["pagingCounter"], last["nextPage"], last["prevPage"]) == (
        50,
        201,
        None,
        2,
    )
    names = [d["name"] for d in first["docs"]] + [d["name"] for d in last["docs"]]
    assert names[0] == "image-0001.jpg" and names[-1] == "image-0250.jpg"
    everything = listing(api, ("batchIds", batch.batch_id), ("pagination", "false"))
    assert (len(everything["docs"]), everything["totalPages"]) == (250, 1)
    empty = listing(api, ("batchIds", "no-such-batch"), ("limit", 1))
    assert (empty["docs"], empty["totalDocs"], empty["totalPages"]) == ([], 0, 1)


def test_filters_narrow_the_list(lab: SimulatorServer, api: httpx.Client) -> None:
    """batchIds, statuses, taskIds, taskNames and nameLike each filter, repeated keys OR'ed."""
    batch = lab.isahit.add_batch(4, running_seconds=0, stagger=100)  # only the first is final
    other = lab.isahit.add_task(name="dog.png")
    ids = [t.task_id for t in batch.tasks]

    def names(*pairs: tuple[str, str | int]) -> list[str]:
        return [d["name"] for d in listing(api, ("limit", 100), *pairs)["docs"]]

    assert names(("batchIds", batch.batch_id), ("statuses", "complete")) == ["image-0001.jpg"]
    assert len(names(("statuses", "to-review"), ("statuses", "complete"))) == 5
    assert names(("taskIds", ids[1]), ("taskIds", other.task_id)) == ["image-0002.jpg", "dog.png"]
    assert names(("taskNames", "dog.png")) == ["dog.png"]
    assert names(("nameLike", r"^image-000[34]")) == ["image-0003.jpg", "image-0004.jpg"]
    assert names(("properties.score", "9")) == []


def test_date_filters_take_an_operator_prefix(lab: SimulatorServer, api: httpx.Client) -> None:
    """createdAt=>… and createdAt=<=… select by creation time, read as UTC."""
    task = lab.isahit.add_task()
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(task.epoch - 1))
    later = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(task.epoch + 3600))
    hit = listing(api, ("taskIds", task.task_id), ("createdAt", f">{created}"))
    assert hit["totalDocs"] == 1
    both = listing(api, ("taskIds", task.task_id), ("createdAt", f">{created}"),
                   ("createdAt", f"<={later}"))  # fmt: skip
    assert both["totalDocs"] == 1
    assert listing(api, ("taskIds", task.task_id), ("updatedAt", f">{later}"))["totalDocs"] == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([], 4001),
        ([("projectId", PROJECT), ("page", "0")], 4000),
        ([("projectId", PROJECT), ("limit", "many")], 4000),
        ([("projectId", PROJECT), ("optionalFields", "everything")], 4000),
        ([("projectId", PROJECT), ("nameLike", "(")], 4000),
        ([("projectId", PROJECT), ("createdAt", "2022-09-19")], 4000),
    ],
)
def test_a_malformed_list_query_is_a_400_with_an_error_code(
    api: httpx.Client, params: list[tuple[str, str]], code: int
) -> None:
    """A missing projectId or a bad filter is a NestJS 400 carrying a numeric errorCode."""
    response = api.get(TASKS, params=params)
    assert response.status_code == 400
    body = response.json()
    assert (body["statusCode"], body["error"], body["errorCode"]) == (400, "Bad Request", code)


def test_an_unknown_project_is_forbidden(api: httpx.Client) -> None:
    """A project the user cannot see is a 403, in NestJS's words."""
    response = api.get(TASKS, params={"projectId": "someone-elses"})
    assert response.status_code == 403
    assert response.json() == {
        "statusCode": 403,
        "message": "Forbidden resource",
        "error": "Forbidden",
    }


def test_batches_and_project_configuration(lab: SimulatorServer, api: httpx.Client) -> None:
    """A batch reads complete once every task is final; unknown batches are 404."""
    batch = lab.isahit.add_batch(2, running_seconds=10)
    doc = api.get(f"api/task-manager/batches/{batch.batch_id}").json()
    assert (doc["_id"], doc["status"], doc["projectId"]) == (batch.batch_id, "pending", PROJECT)
    lab.clock.advance(11)
    assert api.get(f"api/task-manager/batches/{batch.batch_id}").json()["status"] == "complete"
    assert api.get("api/task-manager/batches/nope").status_code == 404
    config = api.get(
        f"api/project-configuration-manager/projects/{PROJECT}/project-configuration"
    ).json()
    assert config["projectType"] == "iat-rectangle"


# --- faults, counters, control API --------------------------------------------------------------


def test_faults_and_counts_on_the_list_follow_the_task_named(
    lab: SimulatorServer, api: httpx.Client
) -> None:
    """A list request naming one task counts as that task's, and a fault aimed at it hits it."""
    mine, other = lab.isahit.add_task(), lab.isahit.add_task()
    lab.inject(kind="rate_limit", task=mine.task_id, retry_after="3")
    lab.inject(kind="unknown_status", task=other.task_id, word="archived")
    limited = api.get(TASKS, params={"projectId": PROJECT, "taskIds": mine.task_id})
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert limited.json()["statusCode"] == 429
    assert listing(api, ("taskIds", other.task_id))["docs"][0]["status"] == "archived"
    assert listing(api, ("taskIds", mine.task_id))["docs"][0]["status"] == "complete"
    assert lab.stats.count(platform="isahit", route=TASKS, task=mine.task_id) == 2
    assert lab.stats.count(platform="isahit", route=TASKS, task=other.task_id) == 1


def test_the_control_api_scripts_and_describes_tasks(lab: SimulatorServer) -> None:
    """POST /_control/isahit/tasks adds specs; GET shows the document and its archive sha256."""
    with httpx.Client(base_url=f"{lab.url}/_control/isahit/", timeout=10) as control:
        created = control.post("tasks", json=[{"name": "x.jpg", "batch_id": "b-1"}]).json()
        task_id = created["tasks"][0]["task_id"]
        assert created["tasks"][0]["batch_id"] == "b-1"
        shown = control.get(f"tasks/{task_id}").json()
        assert shown["document"]["status"] == "complete"
        body = archive_bytes(shown["document"])
        assert hashlib.sha256(body).hexdigest() == shown["archive_sha256"]
        refused = control.post("tasks", json={"outcome": "failure"})
        assert refused.status_code == 422
        assert control.put("config", json={"token_ttl": 5}).json()["token_ttl"] == 5


# --- the official SDK as the judge of fidelity --------------------------------------------------


@pytest.fixture
def sdk(lab: SimulatorServer) -> Any:
    """The real ``isahitlab`` SDK's client on the simulator (skipped when it is not installed)."""
    client = pytest.importorskip("isahitlab.client", reason="the isahitlab SDK is not installed")
    return client.IsahitLab(endpoint=lab.isahit_url, **ACCESS)


def test_the_sdk_sees_a_batch_progress_and_finish(lab: SimulatorServer, sdk: Any) -> None:
    """TaskActions.tasks() walks 150 tasks over two pages while they move to complete."""
    batch = lab.isahit.add_batch(150, pending_seconds=10, running_seconds=10, stagger=0.1)

    def statuses() -> dict[str, int]:
        tasks = sdk.tasks(
            project_id=PROJECT,
            batch_id_in=[batch.batch_id],
            optional_fields=["data", "jobs", "metrics"],
            disable_progress_bar=True,
        )
        assert len(tasks) == 150
        counts: dict[str, int] = {}
        for task in tasks:
            counts[task["status"]] = counts.get(task["status"], 0) + 1
        return counts

    assert statuses() == {"pending": 150}
    lab.clock.advance(15)
    assert statuses() == {"to-review": 150}
    lab.clock.advance(30)
    assert statuses() == {"complete": 150}
    # the SDK logged in once and walked nextPage: 2 pages per call
    assert lab.stats.count(route="api/user-manager/auth/login") == 1
    assert lab.stats.count(route=TASKS, task=batch.batch_id) == 6


def test_the_sdk_filters_merges_data_and_reopens(lab: SimulatorServer, sdk: Any) -> None:
    """Filters as the SDK encodes them, its lab formatter on our documents, and its redo."""
    task = lab.isahit.add_task(name="street.jpg", annotations=4, reopen_seconds=100)
    lab.isahit.add_task(name="other.jpg")
    found = sdk.tasks(
        project_id=PROJECT,
        task_id_in=[task.task_id],
        name_like="^street",
        status_in=["complete"],
        created_at_gte="2000-01-01 00:00:00",
        optional_fields=["data", "jobs", "metrics"],
        disable_progress_bar=True,
    )
    assert [t["_id"] for t in found] == [task.task_id]
    # the formatter merged data.body with data.metadata.body, and dropped jobs it was not asked
    assert len(found[0]["data"]["annotations"]) == 4
    assert found[0]["data"]["imageSize"] == {"width": 1024, "height": 768}
    assert sdk.send_tasks_to_redo(PROJECT, [task.task_id], disable_progress_bar=True) == 1
    again = sdk.tasks(project_id=PROJECT, task_id_in=[task.task_id], disable_progress_bar=True)
    assert again[0]["status"] == "pending"


def test_the_sdk_reports_our_errors_its_own_way(lab: SimulatorServer) -> None:
    """Bad credentials fail the SDK's login; a 400 carries the errorCode the SDK parses."""
    client = pytest.importorskip("isahitlab.client", reason="the isahitlab SDK is not installed")
    exceptions = pytest.importorskip("isahitlab.exceptions")
    wrong = client.IsahitLab(endpoint=lab.isahit_url, access_id="x", secret_key="y")
    with pytest.raises(exceptions.AuthenticationFailed):
        wrong.tasks(project_id=PROJECT, disable_progress_bar=True, raw_data=True)
    sdk = client.IsahitLab(endpoint=lab.isahit_url, **ACCESS)
    with pytest.raises(exceptions.ApiBadRequest) as caught:
        sdk.tasks(project_id=PROJECT, name_like="(", disable_progress_bar=True, raw_data=True)
    assert caught.value.errorCode == 4000
    assert json.loads(str(caught.value))["statusCode"] == 400


def test_task_creation_checks_batches_grants_and_names(
    lab: SimulatorServer, api: httpx.Client
) -> None:
    """POST batches/{b}/tasks needs a known batch, and grants for the data and files it names;
    the task it makes is listed, with the resources and data it was given."""
    batch = api.post("api/task-manager/batches", json={"name": "b", "projectId": PROJECT}).json()
    tasks = f"api/task-manager/batches/{batch['_id']}/tasks"
    assert api.post("api/task-manager/batches/nope/tasks", json={"name": "x"}).status_code == 404
    imported = api.post(
        "api/data-manager/import-data/json",
        params={"skipTaskCreation": "true", "grantAccess": "true"},
        json={"batchId": batch["_id"], "name": "x", "body": {"annotations": []}},
    ).json()
    ungranted = {"name": "x", "dataId": imported["initialDataId"], "grantData": "wrong"}
    assert api.post(tasks, json=ungranted).status_code == 403
    made = api.post(tasks, json={**ungranted, "grantData": imported["accessToken"],
                                 "resources": ["https://img.test/x.jpg"]})  # fmt: skip
    assert made.status_code == 201
    doc = listing(api, ("taskIds", made.json()["_id"]), ("optionalFields", "data"))["docs"][0]
    assert (doc["batchId"], doc["resources"]) == (batch["_id"], ["https://img.test/x.jpg"])
    assert doc["data"]["body"] == {"annotations": []}
    duplicate = api.patch(f"api/task-manager/batches/{batch['_id']}/tasks-duplicate",
                          json={"names": ["x", "y"]})  # fmt: skip
    assert duplicate.json() == {"duplicate": ["x"]}
    # the SDK's lastAnnotator is accepted by the list (and ignored: the SDK derives it)
    assert listing(api, ("taskIds", made.json()["_id"]), ("optionalFields", "lastAnnotator"))[
        "docs"
    ]
