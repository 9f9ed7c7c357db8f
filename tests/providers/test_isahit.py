"""The isahit lab adapter against the isahit simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from taskwarden.config.providers import IsahitSettings, ProvidersSettings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
    RequestRejected,
    ResponseTooLarge,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.net.client import build_client
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.isahit import adapter as isahit
from taskwarden.providers.isahit.client import IsahitApi
from taskwarden.simulator.isahit import IsahitAuth
from taskwarden.simulator.server import SimulatorServer

T = TypeVar("T")
PROJECT = "sim-project"
TASKS = "api/task-manager/tasks"
LOGIN = "api/user-manager/auth/login"
FIELDS = ("data", "jobs", "metrics")


@pytest.fixture
def lab(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator with isahit's default logins and token lifetime."""
    server.isahit.configure(IsahitAuth().model_dump())
    return server


def settings(
    server: SimulatorServer,
    read_timeout: float = 5.0,
    http: dict[str, Any] | None = None,
    **fields: Any,
) -> Settings:
    """Settings as a worker reads them, pointing at ``server`` with the default logins;
    ``http`` overrides HTTP settings, ``fields`` the provider's."""
    isahit_fields: dict[str, Any] = {
        "base_url": server.isahit_url,
        "access_id": "sim-access-id",
        "secret_key": SecretStr("sim-secret-key"),
        **fields,
    }
    return Settings(
        providers=ProvidersSettings(isahit=IsahitSettings(**isahit_fields)),
        # few pools: each costs an SSL context (~50 ms), and a test builds a client per call
        http=HttpSettings(
            **{
                "read_timeout": read_timeout,
                "connect_timeout": 2.0,
                "max_connections": 4,
                **(http or {}),
            }
        ),
    )


def call(
    server: SimulatorServer,
    action: Callable[[isahit.IsahitProvider], Awaitable[T]],
    http: dict[str, Any] | None = None,
    **fields: Any,
) -> T:
    """Run ``action`` on a provider built as a worker builds it, on a fresh client and loop."""
    config = settings(server, http=http, **fields)

    async def main() -> T:
        async with build_client(config.http) as client:
            return await action(isahit.build(config, client))

    return asyncio.run(main())


def task_target(task_id: str, **params: Any) -> Target:
    return Target(task_id, {"project_id": PROJECT, **params})


def batch_target(batch_id: str, **params: Any) -> Target:
    return Target(batch_id, {"project_id": PROJECT, "kind": "batch", **params})


def status(
    server: SimulatorServer, target: Target, http: dict[str, Any] | None = None, **fields: Any
) -> Observation:
    return call(server, lambda p: p.fetch_status(target), http, **fields)


def archive(server: SimulatorServer, target: Target) -> dict[str, bytes]:
    """Every output of ``target`` by name, read as the archive reads them (one provider)."""

    async def read(provider: isahit.IsahitProvider) -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        for ref in await provider.list_outputs(target):
            async with provider.open_output(target, ref) as stream:
                body = b"".join([chunk async for chunk in stream.chunks])
                assert stream.length == len(body)
            got[ref.name] = body
        return got

    return call(server, read)


def lists(server: SimulatorServer, subject: str | None = None) -> int:
    return server.stats.count(platform="isahit", route=TASKS, task=subject)


# --- status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "remote", "word"),
    [
        ({"pending_seconds": 3600, "configuring_seconds": 3600}, Remote.PENDING, "configuring"),
        ({"pending_seconds": 3600}, Remote.PENDING, "pending"),
        ({"running_seconds": 3600}, Remote.RUNNING, "to-review"),
        ({"outcome": "never"}, Remote.RUNNING, "to-review"),
        ({}, Remote.SUCCEEDED, "complete"),
        ({"final_status": "reviewed"}, Remote.SUCCEEDED, "reviewed"),
    ],
)
def test_status_words_map_onto_the_canonical_lifecycle(
    lab: SimulatorServer, script: dict[str, Any], remote: Remote, word: str
) -> None:
    """Each isahit word becomes its canonical Remote, with the raw word and the task's name."""
    task = lab.isahit.add_task(name="cat.jpg", **script)
    seen = status(lab, task_target(task.task_id))
    assert (seen.remote, seen.raw_status, seen.name, seen.progress) == (
        remote,
        word,
        "cat.jpg",
        None,
    )
    reopenable = seen.message is not None and "may reopen" in seen.message
    assert reopenable is (remote is Remote.SUCCEEDED)


def test_a_task_check_is_one_request_and_one_login_serves_many(lab: SimulatorServer) -> None:
    """Three checks cost one login and three list requests naming the task, without fields."""
    task = lab.isahit.add_task()

    async def three(provider: isahit.IsahitProvider) -> list[Observation]:
        return [await provider.fetch_status(task_target(task.task_id)) for _ in range(3)]

    assert [seen.remote for seen in call(lab, three)] == [Remote.SUCCEEDED] * 3
    assert lab.stats.count(route=LOGIN) == 1
    assert lists(lab, task.task_id) == 3 == lists(lab)


def test_concurrent_checks_share_one_login(lab: SimulatorServer) -> None:
    """Twenty checks started together wait on one login instead of each logging in."""
    tasks = [lab.isahit.add_task() for _ in range(20)]

    async def together(provider: isahit.IsahitProvider) -> list[Observation]:
        return list(
            await asyncio.gather(*(provider.fetch_status(task_target(t.task_id)) for t in tasks))
        )

    assert len(call(lab, together)) == 20
    assert lab.stats.count(route=LOGIN) == 1


def test_an_unknown_status_word_is_recorded_raw(lab: SimulatorServer) -> None:
    """A word outside isahit's five maps to UNKNOWN and keeps the word."""
    task = lab.isahit.add_task(outcome="never")
    lab.inject(kind="unknown_status", task=task.task_id, word="archived")
    seen = status(lab, task_target(task.task_id))
    assert (seen.remote, seen.raw_status, seen.message) == (Remote.UNKNOWN, "archived", None)


def test_a_task_the_list_does_not_return_is_not_found(lab: SimulatorServer) -> None:
    """An id the list does not return is RemoteNotFound after one request, naming the project."""
    with pytest.raises(RemoteNotFound, match="not found: the task list of project sim-project"):
        status(lab, task_target("0123456789abcdef01234567"))
    assert lists(lab, "0123456789abcdef01234567") == 1


def test_a_batch_reports_the_fraction_of_final_tasks(lab: SimulatorServer) -> None:
    """Pending until a task is final, then running with final/total, then succeeded."""
    batch = lab.isahit.add_batch(4, pending_seconds=10, running_seconds=10, stagger=10)
    target = batch_target(batch.batch_id)
    seen = status(lab, target)
    assert (seen.remote, seen.raw_status, seen.progress) == (Remote.PENDING, "0/4 final", 0.0)
    lab.clock.advance(21)
    seen = status(lab, target)
    assert (seen.remote, seen.raw_status, seen.progress) == (Remote.RUNNING, "1/4 final", 0.25)
    lab.clock.advance(30)
    seen = status(lab, target)  # all final, but more tasks may come: it settles first
    assert (seen.remote, seen.raw_status, seen.progress) == (
        Remote.RUNNING,
        "4/4 final, settling",
        1.0,
    )
    settled = Target(batch.batch_id, {**target.params, "settle_seconds": 0})
    seen = status(lab, settled)
    assert (seen.remote, seen.raw_status, seen.progress) == (Remote.SUCCEEDED, "4/4 final", 1.0)
    assert seen.message is not None and "may reopen" in seen.message


def test_a_batch_check_costs_two_requests_whatever_its_size(lab: SimulatorServer) -> None:
    """A 450-task batch is checked with two counts (limit=1), not by walking five pages."""
    lab.clock.set_speed(1e-6)  # only advance() moves it: the count is exact
    batch = lab.isahit.add_batch(450, running_seconds=100, stagger=1)
    lab.clock.advance(150.5)
    seen = status(lab, batch_target(batch.batch_id))
    assert seen.raw_status == "51/450 final"
    assert lists(lab, batch.batch_id) == 2


def test_an_empty_batch_is_pending_and_an_unknown_one_not_found(lab: SimulatorServer) -> None:
    """A known batch with no tasks yet waits; a batch the platform does not know is a 404."""
    empty = lab.isahit.add_batch(0)
    seen = status(lab, batch_target(empty.batch_id))
    assert (seen.remote, seen.raw_status) == (Remote.PENDING, "0/0 final")
    with pytest.raises(RemoteNotFound, match="isahit batch nope not found"):
        status(lab, batch_target("nope"))


# --- archive -------------------------------------------------------------------------------


def test_a_task_is_archived_with_its_data_jobs_and_metrics(lab: SimulatorServer) -> None:
    """task.json is the document with data, jobs and metrics, byte for byte what was served."""
    task = lab.isahit.add_task(final_status="reviewed", annotations=5)
    got = archive(lab, task_target(task.task_id))
    assert list(got) == ["task.json"]
    doc = json.loads(got["task.json"])
    assert {"data", "jobs", "metrics"} <= doc.keys() and len(
        doc["data"]["body"]["annotations"]
    ) == 5
    assert hashlib.sha256(got["task.json"]).hexdigest() == lab.isahit.archive_sha256(
        task.task_id, FIELDS
    )


@pytest.mark.parametrize("fields", [["jobs", "jobs.history"], "jobs, jobs.history"])
def test_optional_fields_choose_what_is_archived(lab: SimulatorServer, fields: Any) -> None:
    """params.optional_fields (a list, or the CLI's comma-separated string) replaces the
    default set: here jobs with their history, and no data."""
    task = lab.isahit.add_task()
    doc = json.loads(archive(lab, task_target(task.task_id, optional_fields=fields))["task.json"])
    assert "data" not in doc and "history" in doc["jobs"][0]


def test_a_batch_is_archived_page_by_page(lab: SimulatorServer) -> None:
    """250 tasks give batch.json and 250 task files; 3 light and 3 full pages, nothing per task."""
    batch = lab.isahit.add_batch(250, final_status="reviewed")
    got = archive(lab, batch_target(batch.batch_id))
    assert len(got) == 251 and next(iter(got)) == "batch.json"
    summary = json.loads(got["batch.json"])
    assert (summary["tasks_total"], summary["statuses"], summary["all_final"]) == (
        250,
        {"reviewed": 250},
        True,
    )
    assert summary["may_reopen"] is True and summary["optional_fields"] == list(FIELDS)
    assert [t["name"] for t in summary["tasks"][:2]] == ["image-0001.jpg", "image-0002.jpg"]
    for task in batch.tasks:
        body = got[f"task-{task.task_id}.json"]
        assert hashlib.sha256(body).hexdigest() == lab.isahit.archive_sha256(task.task_id, FIELDS)
    assert lists(lab, batch.batch_id) == 6 == lists(lab)


def test_a_batch_whose_list_moved_is_still_archived_whole(lab: SimulatorServer) -> None:
    """Tasks that changed page between listing and download are fetched alone; a task that
    vanished is RemoteNotFound."""
    batch = lab.isahit.add_batch(150)
    gone = batch.tasks[0].task_id

    async def read(provider: isahit.IsahitProvider) -> dict[str, bytes | None]:
        target = batch_target(batch.batch_id)
        refs = await provider.list_outputs(target)
        del lab.isahit.tasks[gone]  # every later task moves up one place
        got: dict[str, bytes | None] = {}
        for ref in refs[1:]:
            try:
                async with provider.open_output(target, ref) as stream:
                    got[ref.name] = b"".join([chunk async for chunk in stream.chunks])
            except RemoteNotFound:
                got[ref.name] = None
        return got

    got = call(lab, read)
    assert got.pop(f"task-{gone}.json") is None
    for task in batch.tasks[1:]:
        body = got[f"task-{task.task_id}.json"]
        assert body is not None
        assert hashlib.sha256(body).hexdigest() == lab.isahit.archive_sha256(task.task_id, FIELDS)
    # 2 light pages, 2 full pages, and alone: the vanished task and the one that changed page
    assert lists(lab) == 6


def test_inline_outputs_open_from_memory(lab: SimulatorServer) -> None:
    """Opening batch.json or a task.json streams its content without asking the platform."""
    task = lab.isahit.add_task()

    async def read(provider: isahit.IsahitProvider) -> tuple[OutputRef, bytes, int]:
        target = task_target(task.task_id)
        ref = (await provider.list_outputs(target))[0]
        before = lab.stats.count()
        async with provider.open_output(target, ref) as stream:
            body = b"".join([chunk async for chunk in stream.chunks])
        return ref, body, lab.stats.count() - before

    ref, body, asked = call(lab, read)
    assert (body, asked, ref.content_type) == (ref.content, 0, "application/json")


def test_the_page_cache_is_bounded_in_pages_and_time() -> None:
    """A page is kept until its documents are taken, at most four pages, for two minutes."""
    now = [0.0]
    cache = isahit._PageCache(max_pages=2, ttl=120, clock=lambda: now[0])
    cache.put("p1", [{"_id": "a"}, {"_id": "b"}])
    assert cache.take("p1", "a") == {"_id": "a"} and cache.take("p1", "a") is None
    cache.put("p2", [{"_id": "c"}])
    cache.put("p3", [{"_id": "d"}])  # p1 (still holding b) is the oldest: dropped
    assert cache.take("p1", "b") is None and cache.take("p2", "c") == {"_id": "c"}
    now[0] = 121.0
    assert cache.take("p3", "d") is None


# --- auth ----------------------------------------------------------------------------------


def test_the_token_is_renewed_shortly_before_it_expires(lab: SimulatorServer) -> None:
    """With expires_in 100 s the session logs in again 15 s before the end, never meeting a 401."""
    lab.isahit.configure({"token_ttl": 100})
    lab.isahit.add_task()
    now = [0.0]

    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=5) as client:
            api = IsahitApi(
                client, lab.isahit_url, "sim-access-id", "sim-secret-key", lambda: now[0]
            )
            logins = []
            for moment in (0, 50, 84, 86, 120, 172):
                lab.clock.advance(moment - now[0])  # the platform's clock keeps pace with ours
                now[0] = moment
                await api.get(TASKS, [("projectId", PROJECT)], what="tasks")
                logins.append(api.logins)
            return logins

    assert asyncio.run(main()) == [1, 1, 1, 2, 2, 3]
    assert lab.isahit.refused == 0


def test_a_token_dropped_early_costs_one_login_and_one_retry(lab: SimulatorServer) -> None:
    """A 401 on a live token (server restart) logs in once more and the check succeeds."""
    task = lab.isahit.add_task()

    async def twice(provider: isahit.IsahitProvider) -> Observation:
        await provider.fetch_status(task_target(task.task_id))
        lab.isahit.expire_tokens()
        return await provider.fetch_status(task_target(task.task_id))

    assert call(lab, twice).remote is Remote.SUCCEEDED
    assert (lab.stats.count(route=LOGIN), lab.isahit.refused, lists(lab)) == (2, 1, 3)


def test_a_401_after_a_fresh_login_is_credentials_rejected(lab: SimulatorServer) -> None:
    """Two 401s in a row end in CredentialsRejected, after exactly one extra login."""
    task = lab.isahit.add_task()
    lab.inject(kind="status", status=401, route=TASKS, count=2)
    with pytest.raises(CredentialsRejected, match="again with a fresh login"):
        status(lab, task_target(task.task_id))
    assert lab.stats.count(route=LOGIN) == 2


def test_wrong_credentials_are_rejected_without_echoing_them(lab: SimulatorServer) -> None:
    """A refused login is CredentialsRejected naming the settings to check, never the secret."""
    task = lab.isahit.add_task()
    with pytest.raises(CredentialsRejected, match="ACCESS_ID and SECRET_KEY") as caught:
        status(lab, task_target(task.task_id), secret_key=SecretStr("hunter2-secret"))
    assert "hunter2-secret" not in str(caught.value)
    assert lists(lab) == 0


def test_a_project_we_may_not_see_is_credentials_rejected(lab: SimulatorServer) -> None:
    """A 403 quotes NestJS's message rather than its bare reason phrase."""
    with pytest.raises(CredentialsRejected, match="Forbidden resource"):
        status(lab, Target("x", {"project_id": "someone-elses"}))


# --- errors --------------------------------------------------------------------------------


def test_a_400_quotes_the_platform_message_and_error_code(lab: SimulatorServer) -> None:
    """A 400 is RequestRejected carrying the body's message and its errorCode."""
    task = lab.isahit.add_task()
    lab.inject(kind="status", status=400, route=TASKS)
    with pytest.raises(RequestRejected, match=r"injected fault \(errorCode 4000\)"):
        status(lab, task_target(task.task_id))


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), (None, None)])
def test_429_is_rate_limited_with_retry_after(
    lab: SimulatorServer, header: str | None, expected: float | None
) -> None:
    """A 429 (surfaced raw by the SDK) is RateLimited, honouring Retry-After when sent."""
    task = lab.isahit.add_task()
    lab.inject(kind="rate_limit", task=task.task_id, retry_after=header)
    with pytest.raises(RateLimited, match="Too Many Requests") as caught:
        status(lab, task_target(task.task_id))
    assert caught.value.retry_after == expected


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 503, "retry_after": "2"},
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 502, "body": "<h1>502 Bad Gateway</h1>"},
        {"kind": "truncate", "keep_bytes": 20},
        {"kind": "malformed_json"},
        {"kind": "reset"},
    ],
)
def test_broken_responses_are_retryable(lab: SimulatorServer, fault: dict[str, Any]) -> None:
    """5xx, a cut-off body, garbled JSON or a reset are ProviderUnavailable (with in-call
    retries off, so that each one surfaces); the next check works."""
    task = lab.isahit.add_task()
    lab.inject(task=task.task_id, route=TASKS, **fault)
    with pytest.raises(ProviderUnavailable):
        status(lab, task_target(task.task_id), http={"retries": 0})
    assert status(lab, task_target(task.task_id)).remote is Remote.SUCCEEDED


@pytest.mark.parametrize(
    "fault", [{"kind": "status", "status": 503}, {"kind": "reset"}, {"kind": "truncate"}]
)
def test_one_transient_failure_is_absorbed_within_one_check(
    lab: SimulatorServer, fault: dict[str, Any]
) -> None:
    """The in-call retries every provider has: one 503, reset or cut-off body costs one more
    request, not a failed check."""
    task = lab.isahit.add_task()
    lab.inject(task=task.task_id, route=TASKS, count=1, **fault)
    assert status(lab, task_target(task.task_id), http={"retry_backoff": 0.01}).remote is (
        Remote.SUCCEEDED
    )
    assert lists(lab, task.task_id) == 2


def test_a_page_over_the_body_cap_is_too_large(lab: SimulatorServer) -> None:
    """Pages are read under TASKWARDEN_HTTP__MAX_JSON_BYTES, as every provider's JSON is."""
    task = lab.isahit.add_task(annotations=200)
    target = task_target(task.task_id)
    with pytest.raises(ResponseTooLarge, match="MAX_JSON_BYTES"):
        call(lab, lambda p: p.list_outputs(target), http={"max_json_bytes": 2048})
    assert len(call(lab, lambda p: p.list_outputs(target))) == 1


def test_a_slow_platform_times_out_as_unavailable(lab: SimulatorServer) -> None:
    """A response slower than the read timeout is ProviderUnavailable (the SDK sets none)."""
    task = lab.isahit.add_task()
    lab.inject(kind="delay", delay=1.0, task=task.task_id)
    with pytest.raises(ProviderUnavailable, match="Timeout"):
        status(lab, task_target(task.task_id), read_timeout=0.2)


def test_a_page_that_is_not_an_envelope_is_unavailable() -> None:
    """A 200 without docs and totalDocs cannot be walked: retryable, not a crash."""
    request = httpx.Request("GET", "http://sim/api/task-manager/tasks")
    with pytest.raises(ProviderUnavailable, match="expected a page"):
        isahit.parse_page(httpx.Response(200, json=[{"_id": "a"}], request=request))
    page = isahit.parse_page(
        httpx.Response(200, json={"docs": [], "totalDocs": 0, "hasNextPage": True}, request=request)
    )
    assert page.next_page is None  # no nextPage number: nothing to follow


# --- registrations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "need params.project_id"),
        ({"project_id": PROJECT, "kind": "project"}, "'task' or 'batch'"),
        ({"projectId": PROJECT}, r"\['projectId'\] are unknown"),
        ({"project_id": PROJECT, "optional_fields": ["everything"]}, "optional_fields"),
        ({"project_id": PROJECT, "optional_fields": "data,everything"}, "optional_fields"),
        ({"project_id": PROJECT, "optional_fields": {"data": True}}, "optional_fields"),
        ({"project_id": PROJECT, "optional_fields": [{"data": True}]}, "optional_fields"),
        ({"project_id": ["a", "b"]}, "need params.project_id"),
    ],
)
def test_malformed_params_are_rejected_before_any_request(
    lab: SimulatorServer, params: dict[str, Any], reason: str
) -> None:
    """A registration isahit cannot serve is RequestRejected saying why, and asks nothing."""
    with pytest.raises(RequestRejected, match=reason):
        status(lab, Target("some-task", params))
    assert lab.stats.count() == 0


def test_the_project_can_come_from_the_settings(lab: SimulatorServer) -> None:
    """With TASKWARDEN_PROVIDERS__ISAHIT__PROJECT_ID set, a bare task id is enough."""
    task = lab.isahit.add_task()
    assert status(lab, Target(task.task_id), project_id=PROJECT).remote is Remote.SUCCEEDED


def test_abort_is_refused_because_isahit_cannot_stop_a_task(lab: SimulatorServer) -> None:
    """abort() raises RequestRejected and sends nothing: there is no cancellation to call."""
    with pytest.raises(RequestRejected, match="no way to stop"):
        call(lab, lambda p: p.abort(task_target("x")))
    assert lab.stats.count() == 0
