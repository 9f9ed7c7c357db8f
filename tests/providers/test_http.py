"""The shared HTTP helpers: error classification, platform messages, headers, the client."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from taskwarden.config.settings import HttpSettings
from taskwarden.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RateLimited,
    RemoteNotFound,
    RequestRejected,
    TaskwardenError,
)
from taskwarden.net import client as http
from taskwarden.net import errors as http_errors
from taskwarden.net import headers as http_headers

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def response(code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "https://api.example.test/v1/tasks/t1/?apikey=SECRET")
    return httpx.Response(code, content=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
        (504, ProviderUnavailable),
        (408, ProviderUnavailable),
        (429, RateLimited),
        (401, CredentialsRejected),
        (403, CredentialsRejected),
        (404, RemoteNotFound),
        (410, RemoteNotFound),
        (400, RequestRejected),
        (422, RequestRejected),
        (405, RequestRejected),
    ],
)
def test_status_codes_map_onto_the_error_tree(code: int, error: type[TaskwardenError]) -> None:
    """Each HTTP error status raises its error-tree class, carrying the status code."""
    with pytest.raises(error) as caught:
        http_errors.raise_for_status(response(code), provider="p")
    assert type(caught.value) is error
    assert caught.value.status_code == code
    assert caught.value.provider == "p"


def test_success_raises_nothing() -> None:
    """A 2xx response passes through raise_for_status untouched."""
    http_errors.raise_for_status(response(200), provider="p")


def test_messages_leave_out_the_query_string() -> None:
    """An API key in the URL never reaches an error message."""
    with pytest.raises(RemoteNotFound) as caught:
        http_errors.raise_for_status(
            response(404, b'{"detail": "nope"}'), provider="p", what="task t1"
        )
    message = str(caught.value)
    assert "SECRET" not in message
    assert message == "task t1 not found (GET https://api.example.test/v1/tasks/t1/): nope"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"detail": "Task not found"}, "Task not found"),
        ({"detail": {"msg": "quota exceeded"}}, "quota exceeded"),
        ({"detail": {"msg": "bad crs", "type": "geobox.CRSError"}}, "geobox.CRSError: bad crs"),
        (
            {"detail": [{"msg": "Field required", "loc": ["body", "name"], "type": "missing"}]},
            "Field required (body.name)",
        ),
        ({"errors": [{"title": "Bad Request", "detail": "no key"}]}, "no key"),
        ({"errors": ["a", "b"]}, "a; b"),
        ({"error": "token expired"}, "token expired"),
        ({"message": "slow down"}, "slow down"),
        ({"something": "else"}, None),
        ([], None),
        (42, None),
    ],
)
def test_platform_messages_are_found_in_every_error_shape(body: Any, expected: str | None) -> None:
    """error_message reads FastAPI, JSON:API and plain error documents."""
    assert http_errors.error_message(body) == expected


def test_a_long_message_is_cut_to_one_line() -> None:
    """A platform message is squashed to a single line of bounded length."""
    message = http_errors.error_message({"detail": "word\n" * 500})
    assert message is not None
    assert "\n" not in message
    assert len(message) <= http_errors.MAX_MESSAGE


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, expected: float | None) -> None:
    """Retry-After gives seconds to wait, from a number or a date; garbage means not said."""
    assert http_headers.parse_retry_after(header, now=NOW) == expected


def test_rate_limited_carries_retry_after() -> None:
    """A 429's Retry-After ends up on the RateLimited error."""
    with pytest.raises(RateLimited) as caught:
        http_errors.raise_for_status(response(429, headers={"Retry-After": "9"}), provider="p")
    assert caught.value.retry_after == 9.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="dem.tif"', "dem.tif"),
        ("attachment; filename=dem.tif", "dem.tif"),
        ('attachment; filename="a \\"b\\".txt"', 'a "b".txt'),
        ("attachment; filename=\"x.bin\"; filename*=UTF-8''%C3%A9t%C3%A9.bin", "été.bin"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="C:\\temp\\out.csv"', "out.csv"),
        ('attachment; filename=".."', None),
        ('attachment; filename="a\x01b"', None),
        ("inline", None),
        (None, None),
    ],
)
def test_content_disposition_gives_a_safe_base_name(
    header: str | None, expected: str | None
) -> None:
    """The announced file name is decoded and stripped of any directory part."""
    assert http_headers.content_disposition_filename(header) == expected


def test_malformed_json_is_retryable() -> None:
    """A 200 whose body is not JSON is ProviderUnavailable (usually a transient garble)."""
    with pytest.raises(ProviderUnavailable, match="malformed JSON"):
        http.json_body(response(200, b'{"state": "PROG'), provider="p")


def test_client_takes_its_limits_from_settings() -> None:
    """build_client applies every timeout from HttpSettings and has no base URL."""
    settings = HttpSettings(
        connect_timeout=1.5, read_timeout=2.5, write_timeout=3.5, pool_timeout=4.5
    )
    client = http.build_client(settings)
    try:
        timeout = client.timeout
        assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (1.5, 2.5, 3.5, 4.5)
        assert str(client.base_url) == ""
    finally:
        asyncio.run(client.aclose())


def test_connection_refused_is_provider_unavailable() -> None:
    """A platform that is not listening is a retryable ProviderUnavailable, cause kept."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused

        async def main() -> None:
            async with http.build_client(HttpSettings(connect_timeout=2)) as client:
                await http.request(client, "GET", f"http://127.0.0.1:{port}/x", provider="p")

        with pytest.raises(ProviderUnavailable) as caught:
            asyncio.run(main())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_an_unusable_url_is_rejected_not_retried() -> None:
    """A URL httpx cannot send (no scheme) is a permanent RequestRejected."""

    async def main() -> None:
        async with http.build_client(HttpSettings()) as client:
            await http.request(client, "GET", "ftp://example.test/x", provider="p")

    with pytest.raises(RequestRejected):
        asyncio.run(main())
