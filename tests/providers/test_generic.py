"""The generic HTTP adapter against the generic simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from taskwarden.config.providers import GenericHttpSettings, ProvidersSettings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import (
    CredentialsRejected,
    OutputInvalid,
    PermanentError,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.net.client import build_client
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.generic import adapter as generic
from taskwarden.simulator.generic import GenericAuth, default_states
from taskwarden.simulator.server import SimulatorServer

T = TypeVar("T")
STATUS = "api/jobs/{job_id}"
PROJECT_STATUS = "api/projects/{project}/jobs/{job_id}"
FILES = "api/jobs/{job_id}/files/{name}"
STORAGE = "storage/{job_id}/{name}"
TOKEN = "oauth/token"
WORDS = default_states()
FLAT = {  # a simulator shape: everything at the top, bare URL strings, fractions
    "status_path": "state",
    "words": {"pending": "PENDING", "running": "RUNNING", "succeeded": "SUCCESS",
              "failed": "FAILURE", "cancelled": "CANCELLED"},
    "id_path": "id", "name_path": "name", "progress_path": "progress",
    "progress_style": "fraction", "error_path": "error", "outputs_path": "results",
    "output_url_key": None,
}  # fmt: skip


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator with the generic platform's credentials back to defaults."""
    server.generic.auth = GenericAuth()
    server.generic.issued.clear()
    return server


def acme(sim: SimulatorServer, **fields: Any) -> dict[str, Any]:
    """A profile for the simulator's default shape: JSON pointers, percent, named outputs."""
    return {
        "status_url": sim.generic_url + "api/projects/{project}/jobs/{id}",
        "status_path": "/data/attributes/phase",
        "states": WORDS,
        "name_path": "/data/attributes/title",
        "progress_path": "/data/attributes/percent",
        "error_path": "/data/attributes/error/message",
        "outputs_path": "/data/attributes/outputs",
        "output_url_path": "href",
        "output_name_path": "filename",
        "abort_url": sim.generic_url + "api/jobs/{id}/cancel",
        "headers": {"X-Api-Key": "sim-key"},
        **fields,
    }


def flat(sim: SimulatorServer, **fields: Any) -> dict[str, Any]:
    """A profile for the FLAT shape: dotted paths, fractions, bare URLs, a bearer token."""
    return {
        "status_url": sim.generic_url + "api/jobs/{id}",
        "status_path": "state",
        "states": {k: [w.upper() for w in v] for k, v in WORDS.items()}
        | {"succeeded": ["SUCCESS"], "failed": ["FAILURE"], "cancelled": ["CANCELLED"],
           "running": ["RUNNING"], "pending": ["PENDING"]},
        "progress_path": "progress",
        "progress_max": 1,
        "error_path": "error",
        "outputs_path": "results",
        "headers": {"Authorization": "Bearer sim-token"},
        **fields,
    }  # fmt: skip


def call(
    sim: SimulatorServer,
    action: Callable[[generic.GenericHttpProvider], Awaitable[T]],
    profiles: dict[str, Any] | None = None,
    *,
    inline: bool = False,
    read_timeout: float = 5.0,
) -> T:
    """Run ``action`` on an adapter built as a worker builds it, on a fresh client and loop."""
    settings = Settings(
        providers=ProvidersSettings(
            http=GenericHttpSettings.model_validate(
                {"profiles": profiles or {"acme": acme(sim)}, "allow_inline_specs": inline}
            )
        ),
        # few pools: each one builds an SSL context, and 50 of them take seconds to make
        http=HttpSettings(
            read_timeout=read_timeout,
            connect_timeout=2.0,
            max_connections=4,
            connections_per_pool=2,
        ),
    )

    async def main() -> T:
        async with build_client(settings.http) as client:
            return await action(generic.build(settings, client))

    return asyncio.run(main())


def target(job_id: str, profile: str = "acme", **params: Any) -> Target:
    return Target(f"{profile}:{job_id}", {"project": "demo", **params})


def status(
    sim: SimulatorServer, tgt: Target, profiles: dict[str, Any] | None = None
) -> Observation:
    return call(sim, lambda p: p.fetch_status(tgt), profiles)


def archive(
    sim: SimulatorServer, tgt: Target, profiles: dict[str, Any] | None = None
) -> list[tuple[OutputRef, dict[str, Any]]]:
    """List the outputs and download each one, as the archive would."""

    async def run(provider: generic.GenericHttpProvider) -> list[tuple[OutputRef, dict[str, Any]]]:
        got = []
        for ref in await provider.list_outputs(tgt):
            async with provider.open_output(tgt, ref) as stream:
                body = b"".join([chunk async for chunk in stream.chunks])
            got.append((ref, {"body": body, "filename": stream.filename, "length": stream.length}))
        return got

    return call(sim, run, profiles)


@pytest.mark.parametrize(
    ("script", "remote", "word"),
    [
        ({"pending_seconds": 3600}, Remote.PENDING, "queued"),
        ({"running_seconds": 3600}, Remote.RUNNING, "in_progress"),
        ({}, Remote.SUCCEEDED, "completed"),
        ({"outcome": "failure"}, Remote.FAILED, "errored"),
        ({"outcome": "aborted"}, Remote.CANCELLED, "canceled"),
    ],
)
def test_words_at_a_json_pointer_map_onto_the_lifecycle(
    sim: SimulatorServer, script: dict[str, Any], remote: Remote, word: str
) -> None:
    """The word at /data/attributes/phase becomes its canonical state; one request per check."""
    job = sim.generic.add_task(title="ndvi", **script)
    seen = status(sim, target(job.id))
    assert (seen.remote, seen.raw_status, seen.name) == (remote, word, "ndvi")
    assert sim.stats.count(route=PROJECT_STATUS, task=job.id) == 1


def test_progress_and_failure_text_come_from_their_paths(sim: SimulatorServer) -> None:
    """Percent progress is read while running; a failure's message is the error_path text."""
    job = sim.generic.add_task(running_seconds=100, outcome="failure", failure_message="no band 4")
    sim.clock.advance(25)
    assert status(sim, target(job.id)).progress == pytest.approx(0.25, abs=0.02)
    sim.clock.advance(100)
    seen = status(sim, target(job.id))
    assert (seen.remote, seen.message) == (Remote.FAILED, "no band 4")


def test_a_flat_shape_with_dotted_paths_and_fractions(sim: SimulatorServer) -> None:
    """Another platform's shape (top-level fields, fractions, bearer token) maps the same."""
    job = sim.generic.add_task(running_seconds=100, shape=FLAT)
    sim.clock.advance(40)
    seen = status(sim, target(job.id, "flat"), {"flat": flat(sim)})
    assert (seen.remote, seen.raw_status) == (Remote.RUNNING, "RUNNING")
    assert seen.progress == pytest.approx(0.4, abs=0.02)


def test_fail_on_error_fails_a_success_that_reports_an_error(sim: SimulatorServer) -> None:
    """With fail_on_error, "completed" beside an error is a failure with that error."""
    job = sim.generic.add_task(succeeded_with_error="3 tiles skipped")
    assert status(sim, target(job.id)).remote is Remote.SUCCEEDED
    seen = status(sim, target(job.id), {"acme": acme(sim, fail_on_error=True)})
    assert (seen.remote, seen.message) == (Remote.FAILED, "3 tiles skipped")


def test_an_unknown_word_is_recorded_raw(sim: SimulatorServer) -> None:
    """A word the profile does not list is UNKNOWN, kept as sent."""
    job = sim.generic.add_task(running_seconds=100)
    sim.inject(kind="unknown_status", task=job.id, word="on_hold")
    seen = status(sim, target(job.id))
    assert (seen.remote, seen.raw_status, seen.progress) == (Remote.UNKNOWN, "on_hold", None)


def test_a_wrong_status_path_is_a_retryable_error_naming_it(sim: SimulatorServer) -> None:
    """A document without a word at status_path is ProviderUnavailable, saying where it looked."""
    job = sim.generic.add_task()
    with pytest.raises(ProviderUnavailable, match="no status at '/data/state'"):
        status(sim, target(job.id), {"acme": acme(sim, status_path="/data/state")})


@pytest.mark.parametrize(
    ("remote_id", "params", "match"),
    [
        ("no-colon", {}, "'<profile>:<task id>'"),
        (":42", {}, "'<profile>:<task id>'"),
        ("nope:42", {}, r"no http profile 'nope' \(configured: acme\)"),
        ("acme:42", {}, r"status_url needs \{project\}"),
        ("acme:..", {"project": "demo"}, "cannot be '..'"),
        ("acme:42", {"project": "."}, "cannot be '.'"),
    ],
)
def test_bad_targets_are_permanent_and_cost_no_request(
    sim: SimulatorServer, remote_id: str, params: dict[str, Any], match: str
) -> None:
    """A remote id or params that cannot name a URL fail permanently, before any request."""
    with pytest.raises(PermanentError, match=match):
        status(sim, Target(remote_id, params))
    assert sim.stats.count() == 0


def test_an_id_with_colons_keeps_them(sim: SimulatorServer) -> None:
    """Only the first colon separates the profile: the platform's id may hold more, and
    reaches the platform encoded as one path segment."""
    job = sim.generic.add_task(id="urn:job:7")
    assert status(sim, target(job.id)).remote is Remote.SUCCEEDED
    assert sim.stats.count(route=PROJECT_STATUS, task="urn:job:7") == 1


def test_a_job_of_another_project_is_not_found(sim: SimulatorServer) -> None:
    """A 404 from the platform is RemoteNotFound naming the job and the platform's words."""
    job = sim.generic.add_task(project="alpha")
    with pytest.raises(RemoteNotFound, match=rf"acme:{job.id} not found.*no job"):
        status(sim, target(job.id, project="beta"))


def test_outputs_are_archived_with_the_status_document(sim: SimulatorServer) -> None:
    """status.json, then each listed output under its listed name, byte for byte."""
    job = sim.generic.add_task(
        file_name="scene.tif", file_size=300_000, extra_outputs=[{"name": "report.csv", "size": 10}]
    )
    got = archive(sim, target(job.id))
    assert [ref.name for ref, _ in got] == ["status.json", "scene.tif", "report.csv"]
    doc = json.loads(got[0][1]["body"])
    assert doc["data"]["attributes"]["phase"] == "completed"
    for ref, out in got[1:]:
        assert hashlib.sha256(out["body"]).hexdigest() == job.checksums[ref.name]
        assert out["filename"] is None  # the document named it; Content-Disposition does not win
    assert got[1][1]["length"] == 300_000
    assert got[1][0].source == f"http:{sim.generic_url}api/jobs/{job.id}/files/scene.tif"
    assert sim.stats.count(route=FILES, task=job.id) == 2


def test_unnamed_outputs_take_the_platforms_file_name(sim: SimulatorServer) -> None:
    """Bare URLs are named by Content-Disposition, else by the URL's last segment."""
    job = sim.generic.add_task(file_name="dem v2.tif", file_size=10, shape=FLAT)
    got = archive(sim, target(job.id, "flat"), {"flat": flat(sim)})
    ref, out = got[1]
    assert (ref.name, out["filename"]) == ("dem v2.tif", "dem v2.tif")


def test_signed_urls_on_another_origin_get_no_credentials(sim: SimulatorServer) -> None:
    """Outputs on another host are fetched without the API key (storage refuses one)."""
    shape = {"outputs_at": "storage", "storage_host": "localhost"}
    job = sim.generic.add_task(file_size=5000, shape=shape)
    got = archive(sim, target(job.id))
    assert hashlib.sha256(got[1][1]["body"]).hexdigest() == job.sha256
    assert got[1][0].source.startswith("http:http://localhost:")
    assert "sig=" not in got[1][0].source  # signatures stay out of the manifest
    assert sim.generic.rejected() == 0
    assert sim.stats.count(route=STORAGE, task=job.id) == 1


def test_credentials_are_dropped_on_a_redirect_to_another_origin(sim: SimulatorServer) -> None:
    """A 302 from the API to storage on another host does not carry X-Api-Key along
    (httpx alone would)."""
    shape = {"outputs_at": "redirect", "storage_host": "localhost"}
    job = sim.generic.add_task(file_size=5000, shape=shape)
    got = archive(sim, target(job.id))
    assert hashlib.sha256(got[1][1]["body"]).hexdigest() == job.sha256
    assert sim.generic.rejected("credentials_on_signed_url") == 0
    assert (
        sim.stats.count(route=FILES, task=job.id)
        == sim.stats.count(route=STORAGE, task=job.id)
        == 1
    )


def test_output_auth_always_sends_credentials_anywhere(sim: SimulatorServer) -> None:
    """output_auth=always sends the key to another origin too (here storage refuses it)."""
    job = sim.generic.add_task(
        file_size=10, shape={"outputs_at": "storage", "storage_host": "localhost"}
    )
    with pytest.raises(PermanentError, match="Only one auth mechanism"):
        archive(sim, target(job.id), {"acme": acme(sim, output_auth="always")})
    assert sim.generic.rejected("credentials_on_signed_url", job.id) == 1


def test_an_expired_signed_url_is_retryable_and_a_new_listing_works(sim: SimulatorServer) -> None:
    """A 403 on a signed URL is retryable (the archive lists again and gets a fresh URL)."""
    sim.generic.configure({"signed_url_ttl": 5})
    job = sim.generic.add_task(
        file_size=10, shape={"outputs_at": "storage", "storage_host": "localhost"}
    )

    async def late(provider: generic.GenericHttpProvider) -> None:
        refs = await provider.list_outputs(target(job.id))
        sim.clock.advance(10)
        async with provider.open_output(target(job.id), refs[1]):
            pass

    with pytest.raises(ProviderUnavailable, match="expired signed URL"):
        call(sim, late)
    assert sim.generic.rejected("expired_url", job.id) == 1
    assert hashlib.sha256(archive(sim, target(job.id))[1][1]["body"]).hexdigest() == job.sha256


def test_outputs_outside_output_hosts_are_refused(sim: SimulatorServer) -> None:
    """With output_hosts set, an output URL elsewhere is OutputInvalid and never fetched."""
    job = sim.generic.add_task(
        file_size=10, shape={"outputs_at": "storage", "storage_host": "localhost"}
    )
    with pytest.raises(OutputInvalid, match="localhost, which is not in output_hosts"):
        archive(sim, target(job.id), {"acme": acme(sim, output_hosts=["127.0.0.1"])})
    assert sim.stats.count(route=STORAGE) == 0


@pytest.mark.parametrize(
    ("headers", "query", "reason"),
    [({}, {}, "no_credentials"), ({"X-Api-Key": "wrong-key"}, {}, "bad_key"),
     ({"Authorization": "Bearer nope"}, {}, "bad_token")],
)  # fmt: skip
def test_missing_or_wrong_credentials_are_rejected(
    sim: SimulatorServer, headers: dict[str, str], query: dict[str, str], reason: str
) -> None:
    """A 401 is CredentialsRejected with the platform's message, and never shows the secret."""
    job = sim.generic.add_task()
    with pytest.raises(CredentialsRejected, match="credentials rejected") as caught:
        status(sim, target(job.id), {"acme": acme(sim, headers=headers, query=query)})
    assert "wrong-key" not in str(caught.value)
    assert sim.generic.rejected(reason, job.id) == 1


def test_an_api_key_in_the_query_stays_out_of_messages(sim: SimulatorServer) -> None:
    """query credentials authenticate, and a later error message does not show them."""
    job = sim.generic.add_task()
    profile = acme(sim, headers={}, query={"api_key": "sim-key"})
    assert status(sim, target(job.id), {"acme": profile}).remote is Remote.SUCCEEDED
    with pytest.raises(RemoteNotFound) as caught:
        status(sim, target("gone"), {"acme": profile})
    assert "sim-key" not in str(caught.value)


def token_profile(sim: SimulatorServer, **token: Any) -> dict[str, Any]:
    config = {
        "url": sim.generic_url + "oauth/token",
        "form": {"grant_type": "client_credentials"},
        "basic_username": "sim-client",
        "basic_password": "sim-secret",
        **token,
    }
    return {"acme": acme(sim, headers={}, token=config)}


def checks(
    sim: SimulatorServer,
    tgt: Target,
    profiles: dict[str, Any],
    times: int,
    *,
    advance: float = 0.0,
    sleep: float = 0.0,
) -> list[Observation]:
    """``times`` status checks by one adapter, the simulation clock moved on ``advance``
    seconds (which the adapter cannot see) and real time ``sleep`` seconds between them."""

    async def run(provider: generic.GenericHttpProvider) -> list[Observation]:
        seen = []
        for _ in range(times):
            seen.append(await provider.fetch_status(tgt))
            sim.clock.advance(advance)
            await asyncio.sleep(sleep)
        return seen

    return call(sim, run, profiles)


def test_a_token_is_fetched_once_and_shared(sim: SimulatorServer) -> None:
    """Client credentials by HTTP Basic give one token that every check then uses."""
    job = sim.generic.add_task(running_seconds=1000)
    assert len(checks(sim, target(job.id), token_profile(sim), 5, advance=1)) == 5
    assert sim.stats.count(route=TOKEN) == 1


def test_concurrent_checks_fetch_one_token(sim: SimulatorServer) -> None:
    """Twenty checks at once, with no token yet, make one token request."""
    jobs = sim.generic.add_tasks([{"running_seconds": 1000} for _ in range(20)])

    async def run(provider: generic.GenericHttpProvider) -> list[Observation]:
        return await asyncio.gather(*(provider.fetch_status(target(j.id)) for j in jobs))

    assert {o.remote for o in call(sim, run, token_profile(sim))} == {Remote.RUNNING}
    assert sim.stats.count(route=TOKEN) == 1


def test_an_announced_expiry_is_refreshed_before_a_401(sim: SimulatorServer) -> None:
    """With expires_in announced, the token is renewed ahead of time: no request is refused."""
    sim.generic.configure({"token_ttl": 3})  # real seconds: the adapter's clock is the wall's
    job = sim.generic.add_task(running_seconds=1000)
    checks(sim, target(job.id), token_profile(sim), 8, sleep=0.5)  # renewed at 2.7 s
    assert sim.generic.rejected("expired_token") == 0
    assert sim.stats.count(route=TOKEN) == 2


def test_a_token_that_expires_unannounced_is_renewed_on_401(sim: SimulatorServer) -> None:
    """Without expires_in, a 401 mid-watch fetches a new token once and the check succeeds."""
    sim.generic.configure({"token_ttl": 10, "announce_ttl": False})
    job = sim.generic.add_task(running_seconds=1000)
    seen = checks(sim, target(job.id), token_profile(sim), 4, advance=6)
    assert {o.remote for o in seen} == {Remote.RUNNING}
    assert sim.generic.rejected("expired_token", job.id) == 1
    assert sim.stats.count(route=TOKEN) == 2


def test_a_refused_client_is_credentials_rejected(sim: SimulatorServer) -> None:
    """A token endpoint that refuses the client is CredentialsRejected, secret not shown."""
    job = sim.generic.add_task()
    with pytest.raises(CredentialsRejected, match="invalid_client") as caught:
        status(sim, target(job.id), token_profile(sim, basic_password="wrong-secret"))
    assert "wrong-secret" not in str(caught.value)


def test_a_form_and_json_token_request_work_too(sim: SimulatorServer) -> None:
    """Client id and secret can travel in the body, as a form or as JSON."""
    job = sim.generic.add_task()
    form = {
        "grant_type": "client_credentials",
        "client_id": "sim-client",
        "client_secret": "sim-secret",
    }
    for json_body in (False, True):
        profile = token_profile(
            sim, basic_username=None, basic_password=None, form=form, json_body=json_body
        )
        assert status(sim, target(job.id), profile).remote is Remote.SUCCEEDED


def test_a_token_answer_without_the_token_is_retryable(sim: SimulatorServer) -> None:
    """A token_path that finds nothing is ProviderUnavailable naming the path."""
    job = sim.generic.add_task()
    with pytest.raises(ProviderUnavailable, match=r"no token at 'data\.accessToken'"):
        status(sim, target(job.id), token_profile(sim, token_path="data.accessToken"))


def test_abort_sends_the_profiles_request(sim: SimulatorServer) -> None:
    """abort() posts the abort URL; the job then reads as cancelled."""
    job = sim.generic.add_task(outcome="never")
    call(sim, lambda p: p.abort(target(job.id)))
    assert sim.generic.state(job.id) == "canceled"
    assert status(sim, target(job.id)).remote is Remote.CANCELLED


def test_a_profile_without_abort_url_cannot_abort(sim: SimulatorServer) -> None:
    """Without abort_url, abort() says so and sends nothing."""
    job = sim.generic.add_task(outcome="never")
    with pytest.raises(PermanentError, match="no abort_url"):
        call(sim, lambda p: p.abort(target(job.id)), {"acme": acme(sim, abort_url=None)})
    assert sim.generic.state(job.id) == "in_progress"


def test_inline_specs_are_refused_unless_allowed(sim: SimulatorServer) -> None:
    """params.spec is refused by default (SSRF) without a request; allowed, it works."""
    job = sim.generic.add_task()
    tgt = Target(f"mine:{job.id}", {"project": "demo", "spec": acme(sim)})
    with pytest.raises(PermanentError, match="ALLOW_INLINE_SPECS=true"):
        status(sim, tgt)
    assert sim.stats.count() == 0
    seen = call(sim, lambda p: p.fetch_status(tgt), inline=True)
    assert seen.remote is Remote.SUCCEEDED


def test_a_malformed_inline_spec_says_what_is_wrong(sim: SimulatorServer) -> None:
    """An inline spec that is not a valid profile is permanent, with pydantic's reasons."""
    tgt = Target("mine:1", {"spec": {"status_url": "https://x/{id}", "states": {}}})
    with pytest.raises(PermanentError, match="status_path: Field required"):
        call(sim, lambda p: p.fetch_status(tgt), inline=True)


def test_5xx_429_and_broken_bodies_are_retryable(sim: SimulatorServer) -> None:
    """503 (with Retry-After), 429, garbled JSON and a reset (on every in-call attempt) are
    retryable, then it heals."""
    job = sim.generic.add_task()
    tgt = target(job.id)
    sim.inject(kind="status", status=503, task=job.id, retry_after="4")
    with pytest.raises(ProviderUnavailable) as caught:
        status(sim, tgt)
    assert (caught.value.status_code, caught.value.retry_after) == (503, 4.0)
    sim.inject(kind="rate_limit", task=job.id, retry_after="7")
    with pytest.raises(RateLimited) as limited:
        status(sim, tgt)
    assert limited.value.retry_after == 7.0
    attempts = 1 + HttpSettings().retries  # a garbled document is read after the call
    for fault in (
        {"kind": "malformed_json", "count": 1},
        {"kind": "reset", "count": attempts},
        {"kind": "truncate", "keep_bytes": 10, "count": attempts},
    ):
        sim.inject(task=job.id, route=PROJECT_STATUS, **fault)
        with pytest.raises(ProviderUnavailable):
            status(sim, tgt)
    assert status(sim, tgt).remote is Remote.SUCCEEDED


def test_a_truncated_download_fails_while_streaming(sim: SimulatorServer) -> None:
    """A download cut short of its Content-Length is ProviderUnavailable."""
    job = sim.generic.add_task(file_size=1024 * 1024)
    sim.inject(kind="truncate", keep_bytes=1000, task=job.id, route=FILES)
    with pytest.raises(ProviderUnavailable, match="bytes"):
        archive(sim, target(job.id))


def test_a_slow_platform_times_out(sim: SimulatorServer) -> None:
    """A status answer slower than the read timeout is ProviderUnavailable."""
    job = sim.generic.add_task()
    sim.inject(kind="delay", delay=1.0, task=job.id)
    with pytest.raises(ProviderUnavailable, match="Timeout"):
        call(sim, lambda p: p.fetch_status(target(job.id)), read_timeout=0.2)


def test_a_profile_reads_a_real_platforms_shape(sim: SimulatorServer) -> None:
    """A profile for Geobox's real task document (the simulator the real Geobox SDK is
    tested against) follows a Geobox task, its failure message included."""
    profile = {
        "status_url": sim.geobox_url + "tasks/{id}/",
        "status_path": "state",
        "states": {"pending": ["PENDING"], "running": ["PROGRESS"], "succeeded": ["SUCCESS"],
                   "failed": ["FAILURE"], "cancelled": ["ABORTED"]},
        "name_path": "name",
        "error_path": "result.detail.msg",
        "headers": {"Authorization": "Bearer sim-token"},
    }  # fmt: skip
    task = sim.geobox.add_task(
        name="dem", running_seconds=10, outcome="failure", failure_msg="bad CRS"
    )
    seen = status(sim, Target(f"geobox:{task.uuid}"), {"geobox": profile})
    assert (seen.remote, seen.raw_status, seen.name) == (Remote.RUNNING, "PROGRESS", "dem")
    sim.clock.advance(11)
    seen = status(sim, Target(f"geobox:{task.uuid}"), {"geobox": profile})
    assert (seen.remote, seen.message) == (Remote.FAILED, "bad CRS")
