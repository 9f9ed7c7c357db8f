"""One HTTP call: in-call retries, the cap on bodies read whole, short bodies and stalls.

Against the Geobox simulator's fault injection (counting what the platform saw), and a tiny
loopback server for responses no well-behaved server sends (a lying Content-Length, a huge or
compressed-bomb JSON body).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from taskwarden.config.providers import GenericHttpSettings, GeoboxSettings, ProvidersSettings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import ProviderUnavailable, RateLimited, ResponseTooLarge
from taskwarden.lifecycle import Remote
from taskwarden.net import client as http
from taskwarden.providers import geobox
from taskwarden.providers.base import Target
from taskwarden.providers.generic import adapter as generic
from taskwarden.simulator.server import SimulatorServer

T = TypeVar("T")
DOCUMENT = "tasks/{uuid}/"
DOWNLOAD = "files/{uuid}/download/"
FAST = {"retry_backoff": 0.01}


def call(
    server: SimulatorServer,
    action: Callable[[geobox.GeoboxProvider], Awaitable[T]],
    **http_settings: Any,
) -> T:
    """Run ``action`` on a Geobox provider built as a worker builds it."""
    settings = Settings(
        providers=ProvidersSettings(
            geobox=GeoboxSettings(base_url=server.geobox_url, token=SecretStr("sim-token"))
        ),
        http=HttpSettings(**{"connect_timeout": 2.0, "read_timeout": 5.0, **http_settings}),
    )

    async def main() -> T:
        async with http.build_client(settings.http) as client:
            return await action(geobox.build(settings, client))

    return asyncio.run(main())


def check(server: SimulatorServer, uuid: str, **http_settings: Any) -> Any:
    """One status check, as a poll makes it."""
    return call(server, lambda p: p.fetch_status(Target(uuid)), **http_settings)


def gets(server: SimulatorServer, uuid: str, route: str = DOCUMENT) -> int:
    return server.stats.count(method="GET", route=route, task=uuid)


# --- in-call retries --------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [{"kind": "status", "status": 503}, {"kind": "reset"},
                                   {"kind": "truncate", "keep_bytes": 10}])  # fmt: skip
def test_one_transient_failure_is_absorbed_within_one_check(
    server: SimulatorServer, fault: dict[str, Any]
) -> None:
    """A single 503, reset or cut-off body costs one more request, not a failed check."""
    task = server.geobox.add_task()
    server.inject(task=task.uuid, route=DOCUMENT, count=1, **fault)
    assert check(server, task.uuid, **FAST).remote is Remote.SUCCEEDED
    assert gets(server, task.uuid) == 2


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_a_persistent_503_surfaces_after_the_configured_retries(
    server: SimulatorServer, retries: int
) -> None:
    """TASKWARDEN_HTTP__RETRIES more attempts, then the 503 reaches the retry policy."""
    task = server.geobox.add_task()
    server.inject(kind="status", status=503, task=task.uuid, route=DOCUMENT, count=None)
    with pytest.raises(ProviderUnavailable) as caught:
        check(server, task.uuid, retries=retries, **FAST)
    assert caught.value.status_code == 503
    assert gets(server, task.uuid) == 1 + retries


def test_a_short_retry_after_is_waited_in_the_call(server: SimulatorServer) -> None:
    """A 429 with Retry-After: 1 (under RETRY_MAX_WAIT) is waited out and sent again."""
    task = server.geobox.add_task()
    server.inject(kind="rate_limit", retry_after="1", task=task.uuid, route=DOCUMENT, count=1)
    started = time.monotonic()
    assert check(server, task.uuid).remote is Remote.SUCCEEDED
    assert time.monotonic() - started >= 0.9  # it waited what the platform asked
    assert gets(server, task.uuid) == 2


@pytest.mark.parametrize("retry_after", ["30", None])
def test_a_long_or_missing_retry_after_is_left_to_the_poll_schedule(
    server: SimulatorServer, retry_after: str | None
) -> None:
    """A 429 asking for 30 s (or for no time in particular) surfaces at once, one request."""
    task = server.geobox.add_task()
    server.inject(kind="rate_limit", retry_after=retry_after, task=task.uuid, count=None)
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        check(server, task.uuid)
    assert time.monotonic() - started < 5
    assert caught.value.retry_after == (None if retry_after is None else 30.0)
    assert gets(server, task.uuid) == 1


def test_a_read_timeout_is_not_sent_again(server: SimulatorServer) -> None:
    """A request that timed out spent its budget: it surfaces after one attempt."""
    task = server.geobox.add_task()
    server.inject(kind="delay", delay=3.0, task=task.uuid, route=DOCUMENT, count=None)
    with pytest.raises(ProviderUnavailable, match="ReadTimeout"):
        check(server, task.uuid, read_timeout=0.3)
    assert gets(server, task.uuid) == 1


def test_a_post_is_not_sent_again(server: SimulatorServer) -> None:
    """An abort (POST) that met a 503 may have been acted on: it is not repeated."""
    task = server.geobox.add_task(running_seconds=1000)
    server.inject(kind="status", status=503, task=task.uuid, method="POST", count=None)
    with pytest.raises(ProviderUnavailable):
        call(server, lambda p: p.abort(Target(task.uuid)), **FAST)
    assert server.stats.count(method="POST", task=task.uuid) == 1


def test_opening_a_download_is_retried_in_the_call(server: SimulatorServer) -> None:
    """A 503 on a download's first response is absorbed; the bytes arrive whole."""
    task = server.geobox.add_task(file_size=50_000)
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    server.inject(kind="status", status=503, task=task.uuid, route=DOWNLOAD, count=1)

    async def read(provider: geobox.GeoboxProvider) -> bytes:
        async with provider.open_output(Target(task.uuid), refs[-1]) as out:
            return b"".join([chunk async for chunk in out.chunks])

    assert len(call(server, read, **FAST)) == 50_000
    assert gets(server, task.uuid, DOWNLOAD) == 2


# --- a stalled download -----------------------------------------------------------------------


def test_a_stalled_download_fails_by_its_read_timeout(server: SimulatorServer) -> None:
    """A download that stops sending mid-body (connection left open) fails by the read
    timeout, within seconds, instead of holding the worker for as long as the server likes."""
    task = server.geobox.add_task(file_size=2 * 1024 * 1024)
    refs = call(server, lambda p: p.list_outputs(Target(task.uuid)))
    server.inject(kind="stall", keep_bytes=100_000, delay=120, task=task.uuid, route=DOWNLOAD)
    received = 0

    async def read(provider: geobox.GeoboxProvider) -> None:
        nonlocal received
        async with provider.open_output(Target(task.uuid), refs[-1]) as out:
            async for chunk in out.chunks:
                received += len(chunk)

    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="ReadTimeout"):
        call(server, read, read_timeout=0.5)
    assert time.monotonic() - started < 30
    assert 0 < received < 2 * 1024 * 1024


# --- bodies read whole: the size cap and lying lengths ------------------------------------------


class RawServer:
    """A loopback server answering every request with the same raw bytes, then closing."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/status"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    part = conn.recv(65536)
                    if not part:
                        break
                    data += part
                self.requests += 1
                # the client may hang up early (a body over the cap): fine
                with contextlib.suppress(OSError):
                    conn.sendall(self.response)

    @contextmanager
    def running(self) -> Iterator[RawServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            self._sock.close()


def raw(body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 200 OK\r\nConnection: close\r\n{head}\r\n".encode() + body


def fetch(url: str, **http_settings: Any) -> httpx.Response:
    settings = HttpSettings(**{"read_timeout": 5.0, "retry_backoff": 0.01, **http_settings})

    async def main() -> httpx.Response:
        async with http.build_client(settings) as client:
            return await http.request(client, "GET", url, provider="p")

    return asyncio.run(main())


CAP = 4096
JSON = {"Content-Type": "application/json"}


def test_a_body_under_the_cap_is_read_whole() -> None:
    """A status document under the cap reads as usual: content and JSON."""
    body = b'{"status": "ok", "pad": "' + b"x" * 3000 + b'"}'
    with RawServer(raw(body, {**JSON, "Content-Length": str(len(body))})).running() as srv:
        response = fetch(srv.url, max_json_bytes=CAP)
    assert response.content == body
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "headers", "said"),
    [
        # announced over the cap: refused before the body is read
        (b"{}" + b" " * 10_000, {"Content-Length": "10002"}, "announces 10002 bytes"),
        # not announced (chunked by a close-delimited body): reading stops at the cap
        (b"[" + b"0," * 10_000 + b"0]", {}, f"is over {CAP} bytes"),
        # a small gzip that inflates past the cap: the cap counts decoded bytes
        (gzip.compress(b" " * 1_000_000), {"Content-Encoding": "gzip"}, f"is over {CAP} bytes"),
    ],
)
def test_a_body_over_the_cap_is_refused_naming_the_cap(
    body: bytes, headers: dict[str, str], said: str
) -> None:
    """Over TASKWARDEN_HTTP__MAX_JSON_BYTES is ResponseTooLarge naming the variable and the
    cap, and it is not sent again in the call (it would be just as large)."""
    with RawServer(raw(body, {**JSON, **headers})).running() as srv:
        with pytest.raises(ResponseTooLarge) as caught:
            fetch(srv.url, max_json_bytes=CAP)
        assert srv.requests == 1
    message = str(caught.value)
    assert said in message
    assert f"{CAP} bytes (TASKWARDEN_HTTP__MAX_JSON_BYTES)" in message
    assert isinstance(caught.value, ProviderUnavailable)  # retryable, by the poll schedule


def test_a_body_shorter_than_its_content_length_is_an_error() -> None:
    """A body that stops short of its Content-Length is ProviderUnavailable on every attempt,
    never a silently short document."""
    body = b'{"status": "succeeded", "outputs": ['
    response = raw(body, {**JSON, "Content-Length": str(len(body) + 100)})
    with RawServer(response).running() as srv:
        with pytest.raises(ProviderUnavailable, match="RemoteProtocolError") as caught:
            fetch(srv.url, retries=1)
        assert srv.requests == 2  # a cut-off body is worth one more try in the call
    assert not isinstance(caught.value, ResponseTooLarge)


def test_the_generic_provider_caps_its_status_document(server: SimulatorServer) -> None:
    """The generic ``http`` provider reads status documents through the same cap."""
    job = server.generic.add_task(title="t" * 5000)
    profile = {
        "status_url": server.generic_url + "api/projects/{project}/jobs/{id}",
        "status_path": "/data/attributes/phase",
        "states": {"succeeded": ["succeeded"], "running": ["running"]},
        "headers": {"X-Api-Key": "sim-key"},
    }
    settings = Settings(
        providers=ProvidersSettings(
            http=GenericHttpSettings.model_validate({"profiles": {"acme": profile}})
        ),
        http=HttpSettings(max_json_bytes=CAP, allow_private_addresses=True),
    )

    async def main() -> Any:
        async with http.build_client(settings.http) as client:
            provider = generic.build(settings, client)
            return await provider.fetch_status(Target(f"acme:{job.id}", {"project": "demo"}))

    with pytest.raises(ResponseTooLarge, match="TASKWARDEN_HTTP__MAX_JSON_BYTES"):
        asyncio.run(main())
