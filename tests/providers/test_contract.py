"""The provider contract: what every built-in adapter promises the service above it, one test
body per promise, run over every provider and every kind of remote task it watches (the table
in tests/providers/contract.py), against the simulator over real HTTP, through clients built
the way a worker builds them.

    an unknown remote id        RemoteNotFound (one documented exception: a Descartes Labs
                                export, see the table)
    a 5xx                       ProviderUnavailable, with ``retry_after`` from Retry-After
    a dropped connection        ProviderUnavailable
    a 429                       RateLimited, with ``retry_after`` when Retry-After was sent
    a download cut short        retryable, and nothing short is archived: the retry archives
                                the whole output
    credentials                 in no exception message, after a 401 or 403 too
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from taskwarden import archive, net
from taskwarden.config.providers import ProvidersSettings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
)
from taskwarden.lifecycle import Remote
from taskwarden.providers.base import Provider, Target
from taskwarden.providers.registry import BUILTIN, factories
from taskwarden.simulator.server import SimulatorServer

from .contract import CASES, DOWNLOADS, EVERY_SECRET, SETUPS, Case, Secrets

T = TypeVar("T")
OPERATIONS = ("fetch_status", "list_outputs")  # the first call of a poll, of an archive
KEEP = 100  # bytes of a cut download that arrive


def settings_for(sim: SimulatorServer, pick: str = "good", **chosen: Secrets) -> Settings:
    """Settings for every provider at ``sim``, each with its ``pick`` credentials (or those
    ``chosen`` for it); loopback allowed, as the simulator hands over loopback URLs."""
    sections = {
        name: setup.section(sim, chosen.get(name, getattr(setup, pick)))
        for name, setup in SETUPS.items()
    }
    return Settings(
        providers=ProvidersSettings(**sections),
        http=HttpSettings(
            allow_private_addresses=True,
            retry_backoff=0.01,  # in-call retries as configured, without the wait
            read_timeout=5.0,
            connect_timeout=2.0,
            max_connections=8,  # few pools: each costs an SSL context
            connections_per_pool=2,
        ),
    )


@dataclass
class Worker:
    """What a worker process builds once: settings, a client per provider over one set of
    connection pools (each with its URL guard), the adapters, and the loop they run on."""

    settings: Settings
    clients: dict[str, httpx.AsyncClient]
    providers: dict[str, Provider]
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def adapter(self, name: str, settings: Settings) -> Provider:
        """Another adapter of provider ``name``, with other settings, on the same client."""
        return factories()[name](settings, self.clients[name])


@pytest.fixture(scope="module")
def worker(_module_sim: SimulatorServer) -> Iterator[Worker]:
    """Clients built as a worker's Runtime builds them (``net.provider_clients``: one client
    per provider over shared pools, the provider's URL guard installed), then the adapters."""
    settings = settings_for(_module_sim)
    clients = net.provider_clients(settings, BUILTIN).clients
    built = factories()
    providers = {name: built[name](settings, clients[name]) for name in BUILTIN}
    loop = asyncio.new_event_loop()
    yield Worker(settings, clients, providers, loop)
    for client in clients.values():
        loop.run_until_complete(client.aclose())
    loop.run_until_complete(archive.settle())
    loop.close()


@pytest.fixture
def lab(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator, reset, accepting this module's good credentials only."""
    for setup in SETUPS.values():
        setup.accept(server, setup.good)
    return server


@pytest.fixture(params=CASES, ids=lambda case: case.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def issued(sim: SimulatorServer) -> set[str]:
    """The bearer tokens the simulated platforms handed out so far (secrets too)."""
    books = (sim.geobox.issued, sim.up42.tokens.issued, sim.isahit.issued, sim.generic.issued)
    return {token for book in books for token in book}


def assert_no_secrets(exc: BaseException, sim: SimulatorServer) -> None:
    """No credential, nor any token issued, in the message of ``exc`` or of its causes (a
    chain that ends: what walks it, a log formatter say, must not go round for ever)."""
    secrets = EVERY_SECRET | issued(sim)
    walked: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None:
        assert all(seen is not other for other in walked), f"{seen!r} is its own cause"
        walked.append(seen)
        text = f"{seen} {seen.args!r}"
        leaked = sorted(secret for secret in secrets if secret in text)
        assert not leaked, f"{type(seen).__name__} shows {leaked}: {text}"
        seen = seen.__cause__ or seen.__context__


def call(worker: Worker, provider: Provider, operation: str, target: Target) -> object:
    method = getattr(provider, operation)
    return worker.run(method(target))


def fired(sim: SimulatorServer, fault: int) -> int:
    return next(f["fired"] for f in sim.faults.armed() if f["id"] == fault)


# --- an unknown remote id ---------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_unknown_remote_id_is_remote_not_found(
    case: Case, operation: str, lab: SimulatorServer, worker: Worker
) -> None:
    """A remote id the platform does not know is RemoteNotFound (permanent), on a status check
    and on a listing alike."""
    provider = worker.providers[case.provider]
    with pytest.raises(RemoteNotFound) as caught:
        call(worker, provider, operation, case.unknown(lab))
    assert_no_secrets(caught.value, lab)
    if case.lookalike is None:
        return
    # The documented exception: an unknown id the platform answers like a real one still
    # running (case.lookalike.reason). A status check reports it as running; a listing, which
    # asks for a finished task's result, finds none.
    lookalike = case.lookalike.target(lab)
    if operation == "fetch_status":
        seen = worker.run(provider.fetch_status(lookalike))
        assert (seen.remote, seen.raw_status) == (Remote.RUNNING, case.lookalike.raw_status)
    else:
        with pytest.raises(RemoteNotFound):
            worker.run(provider.list_outputs(lookalike))


# --- 5xx and 429 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        ({"status": 500}, None),
        ({"status": 502, "body": "<html><h1>502 Bad Gateway</h1></html>"}, None),  # a proxy's
        ({"status": 503, "retry_after": "120"}, 120.0),
    ],
    ids=["500", "502-html", "503-retry-after"],
)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_5xx_is_provider_unavailable(
    case: Case,
    operation: str,
    fault: dict[str, Any],
    retry_after: float | None,
    lab: SimulatorServer,
    worker: Worker,
) -> None:
    """A 5xx answer (the platform's own error body or a proxy's page) is ProviderUnavailable
    with its status code, and the Retry-After the platform sent."""
    task = case.finished(lab)
    armed = lab.inject(kind="status", task=task.key, count=None, **fault)
    with pytest.raises(ProviderUnavailable) as caught:
        call(worker, worker.providers[case.provider], operation, task.target)
    assert (caught.value.status_code, caught.value.retry_after) == (fault["status"], retry_after)
    # sent again in the call unless the platform asked for a wait too long to sleep there
    assert fired(lab, armed) == (1 if retry_after else 1 + worker.settings.http.retries)
    assert_no_secrets(caught.value, lab)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_dropped_connection_is_provider_unavailable(
    case: Case, operation: str, lab: SimulatorServer, worker: Worker
) -> None:
    """A connection reset before any answer (every in-call retry included) is
    ProviderUnavailable, with no status code to report."""
    task = case.finished(lab)
    armed = lab.inject(kind="reset", task=task.key, count=None)
    with pytest.raises(ProviderUnavailable) as caught:
        call(worker, worker.providers[case.provider], operation, task.target)
    assert caught.value.status_code is None
    assert fired(lab, armed) == 1 + worker.settings.http.retries
    assert_no_secrets(caught.value, lab)


@pytest.mark.parametrize(("header", "retry_after"), [("120", 120.0), (None, None)])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_429_is_rate_limited_with_the_platforms_retry_after(
    case: Case,
    operation: str,
    header: str | None,
    retry_after: float | None,
    lab: SimulatorServer,
    worker: Worker,
) -> None:
    """A 429 is RateLimited, carrying Retry-After as seconds when the platform sent one and
    None when it did not."""
    task = case.finished(lab)
    armed = lab.inject(kind="rate_limit", task=task.key, count=None, retry_after=header)
    with pytest.raises(RateLimited) as caught:
        call(worker, worker.providers[case.provider], operation, task.target)
    assert (caught.value.status_code, caught.value.retry_after) == (429, retry_after)
    assert fired(lab, armed) == 1  # not slept on in the call: the poll schedule waits
    assert_no_secrets(caught.value, lab)


# --- a download cut short ---------------------------------------------------------------------


def _snapshot(store: archive.ArchiveStore) -> dict[str, str]:
    return {
        obj.key: hashlib.sha256(archive.read_object(store, obj.key)).hexdigest()
        for obj in archive.list_objects(store)
    }


@pytest.mark.parametrize("case", DOWNLOADS, ids=lambda case: case.name)
def test_a_download_cut_short_is_retryable_and_never_archived_short(
    case: Case, lab: SimulatorServer, worker: Worker, tmp_path: Path
) -> None:
    """A streamed output whose connection ends before its announced length is
    ProviderUnavailable (a cut connection, so retryable: not OutputInvalid, which would give
    the archive up); no short or partial object is left, and the retry archives it whole."""
    assert case.download is not None
    download = case.download(lab)
    platform = SETUPS[case.provider].platform
    armed = lab.inject(
        kind="truncate", platform=platform, route=download.route, keep_bytes=KEEP, count=None
    )
    store = archive.open_store(
        Settings(data_dir=tmp_path, archive_url=(tmp_path / "archive").as_uri())
    )
    provider = worker.providers[case.provider]

    def run() -> archive.Manifest:
        return worker.run(
            archive.archive_outputs(
                store, provider, download.target, watch_id="w", provider_name=case.provider,
                final_status="done", now=datetime.now(UTC), chunk_size=5 * 1024 * 1024,
            )
        )  # fmt: skip

    with pytest.raises(ProviderUnavailable) as caught:
        run()
    assert fired(lab, armed) >= 1
    assert_no_secrets(caught.value, lab)
    left = _snapshot(store)
    assert not any(key.endswith("/manifest.json") for key in left)

    lab.faults.remove(armed)
    manifest = run()
    whole = {output.key: output.sha256 for output in manifest.outputs}
    cut = next(output for output in manifest.outputs if output.name == download.name)
    assert cut.size > KEEP and cut.key not in left
    # what the failed run left is the start of the archive, each object whole
    assert left == {key: whole.get(key) for key in left}
    manifest_at = archive.manifest_key(store, case.provider, download.target.remote_id)
    assert set(_snapshot(store)) == {*whole, manifest_at}


# --- credentials --------------------------------------------------------------------------------


@pytest.mark.parametrize("refusal", ["refused-credentials", "401", "403"])
def test_credentials_never_appear_in_error_messages(
    case: Case, refusal: str, lab: SimulatorServer, worker: Worker
) -> None:
    """Refused credentials, and a 401 or 403 to good ones (after a token renewal where the
    provider has one), are CredentialsRejected, whose message names no credential and no
    token."""
    task = case.finished(lab)
    provider = worker.providers[case.provider]
    if refusal == "refused-credentials":
        provider = worker.adapter(case.provider, settings_for(lab, "refused"))
    else:
        lab.inject(kind="status", status=int(refusal), task=task.key, count=None)
    with pytest.raises(CredentialsRejected) as caught:
        worker.run(provider.fetch_status(task.target))
    assert_no_secrets(caught.value, lab)
