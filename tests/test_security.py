"""Output URLs a platform hands over are fetched only from allowed hosts and public addresses
(net/urls.py); the operator's own API URLs are trusted; one origin rule says which is which."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskwarden.config.providers import (
    GenericHttpSettings,
    GenericProfile,
    ProvidersSettings,
    Up42Settings,
)
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.errors import UrlRefused
from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.net.client import build_client
from taskwarden.net.urls import (
    NO_ORIGIN,
    Guard,
    Policy,
    host_allowed,
    non_public,
    origin,
    policy_for,
)
from taskwarden.simulator.generic import profile as generic_profile
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden

STORAGE = "storage/{job_id}/{name}"
FILES = "api/jobs/{job_id}/files/{name}"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.3.3", "link-local"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 an address under test, not a bind
        ("::", "unspecified"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "address"),  # reserved (Python calls it private)
    ],
)
def test_addresses_are_public_or_say_why_not(address: str, why: str | None) -> None:
    """Every non-public range is refused with its name; IPv4 inside IPv6 is judged as IPv4."""
    said = non_public(ipaddress.ip_address(address))
    assert (said is None) if why is None else (said is not None and why in said)


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("bucket.s3.amazonaws.com", ["*.amazonaws.com"], True),
        ("amazonaws.com", ["*.amazonaws.com"], False),
        ("evil-amazonaws.com", ["*.amazonaws.com"], False),
        ("amazonaws.com.evil.test", ["*.amazonaws.com"], False),
        ("STORAGE.example.com.", ["storage.example.com"], True),
        ("anything.test", [], True),
    ],
)
def test_output_hosts_patterns(host: str, allowed: list[str], ok: bool) -> None:
    """A '*.' pattern matches subdomains only; an exact name matches itself; none allows all."""
    assert host_allowed(host, allowed) is ok


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/v1/", ("https", "api.example.com", 443)),
        # case
        ("HTTPS://API.Example.COM/v1/", ("https", "api.example.com", 443)),
        # a trailing dot: the same DNS name
        ("https://api.example.com./v1/", ("https", "api.example.com", 443)),
        ("https://API.example.com.:8443/", ("https", "api.example.com", 8443)),
        # default ports: filled in, and an explicit one is the same origin; other ports are kept
        ("http://api.example.com/", ("http", "api.example.com", 80)),
        ("https://api.example.com:443/", ("https", "api.example.com", 443)),
        ("https://api.example.com:80/", ("https", "api.example.com", 80)),
        ("http://api.example.com:8080/", ("http", "api.example.com", 8080)),
        ("http://api.example.com:0/", ("http", "api.example.com", 0)),  # not the default
        ("ftp://files.example.com/", ("ftp", "files.example.com", None)),  # no default known
        # IPv6 literals: bare, compressed, lower-cased
        ("http://[::1]:8080/", ("http", "::1", 8080)),
        ("http://[0:0:0:0:0:0:0:1]/", ("http", "::1", 80)),
        ("http://[2001:DB8::1]/", ("http", "2001:db8::1", 80)),
        ("http://[::FFFF:127.0.0.1]/", ("http", "::ffff:7f00:1", 80)),
        # user info is not part of the origin, whatever it looks like
        ("https://user:secret@api.example.com/", ("https", "api.example.com", 443)),
        ("https://api.example.com@evil.test/", ("https", "evil.test", 443)),
        ("https://api.example.com:443@evil.test:8443/", ("https", "evil.test", 8443)),
        # an internationalised name in the form httpx sends
        ("https://bücher.example/", ("https", "xn--bcher-kva.example", 443)),
        # URLs that cannot be read have no origin (never the default port's)
        ("http://api.example.com:99999/", NO_ORIGIN),
        ("http://api.example.com:http/", NO_ORIGIN),
        ("http://[::1/", NO_ORIGIN),
        ("http://300.1.1.1/", NO_ORIGIN),
    ],
)
def test_origin_is_one_canonical_form(url: str, expected: tuple[str, str, int | None]) -> None:
    """Spellings of one origin (case, a trailing dot, an explicit default port, IPv6 forms)
    compare equal; user info never counts; a URL httpx cannot send has no origin."""
    assert origin(url) == expected
    if expected != NO_ORIGIN:
        assert origin(httpx.URL(url)) == expected  # as the URL guard sees a request's URL


def test_a_trailing_dot_or_explicit_port_on_a_configured_url_is_still_trusted() -> None:
    """A request to the API under another spelling of its origin is the API's (trusted); the
    same host on another port or scheme is not."""
    settings = Settings(
        providers=ProvidersSettings(up42=Up42Settings(base_url="https://api.up42.com"))
    )
    up42 = policy_for(settings, "up42")
    assert up42.is_trusted(httpx.URL("https://API.up42.com.:443/v2/processing/jobs/x"))
    assert not up42.is_trusted(httpx.URL("https://api.up42.com:8443/"))
    assert not up42.is_trusted(httpx.URL("http://api.up42.com/"))
    assert not up42.is_trusted(httpx.URL("https://api.up42.com.evil.test/"))


def test_configured_urls_are_trusted_and_nothing_else() -> None:
    """Each provider trusts the origins of its configured URLs; allow flags fall back to the
    global one; an unknown (plugin) provider trusts nothing."""
    settings = Settings(
        providers=ProvidersSettings(
            up42=Up42Settings(
                base_url="https://api.up42.com",
                token_url="https://auth.up42.com/token",
                output_hosts=["*.amazonaws.com"],
                allow_private_addresses=False,
            )
        ),
        http=HttpSettings(allow_private_addresses=True),
    )
    up42 = policy_for(settings, "up42")
    assert up42.trusted == {("https", "api.up42.com", 443), ("https", "auth.up42.com", 443)}
    assert (up42.hosts, up42.allow_private) == (("*.amazonaws.com",), False)
    assert policy_for(settings, "geobox").allow_private is True
    assert policy_for(settings, "acme").trusted == frozenset()
    assert {o[1] for o in policy_for(settings, "descarteslabs").trusted} == {
        "platform.descarteslabs.com",
        "iam.descarteslabs.com",  # the SDK 1.12.1 default IAM host
    }


def test_output_hosts_setting_takes_a_list_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKWARDEN_PROVIDERS__<NAME>__OUTPUT_HOSTS is JSON or comma-separated."""
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__UP42__OUTPUT_HOSTS", "*.amazonaws.com, a.test")
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__GEOBOX__OUTPUT_HOSTS", '["b.test"]')
    settings = Settings()
    assert settings.providers.up42.output_hosts == ["*.amazonaws.com", "a.test"]
    assert settings.providers.geobox.output_hosts == ["b.test"]
    with pytest.raises(ValueError, match="not a host name"):
        Up42Settings(output_hosts=["*"])


async def _fetch(policy: Policy, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with build_client(HttpSettings(connect_timeout=2)) as client:
        Guard(policy).install(client)
        response = await client.get(url, headers=headers)
        await response.aclose()
        return response


def _generic_policy(sim: SimulatorServer, **kw: Any) -> Policy:
    profiles = {"acme": GenericProfile.model_validate(generic_profile(sim.generic_url))}
    settings = Settings(providers=ProvidersSettings(http=GenericHttpSettings(profiles=profiles)))
    policy = policy_for(settings, "http")
    return Policy(**{**vars(policy), **kw})


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("10.0.0.1", "private address"),
        ("[::1]", "loopback"),
        ("localhost", "loopback"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 an address under test, not a bind
    ],
)
def test_a_non_public_url_is_refused_before_anything_is_sent(
    sim: SimulatorServer, host: str, why: str
) -> None:
    """A request to a non-public address never leaves: the storage route saw nothing."""
    before = sim.stats.count(route=STORAGE)
    url = f"http://{host}:{sim.port}/generic/storage/x/y?sig=secret-sig"
    with pytest.raises(UrlRefused, match=why) as caught:
        asyncio.run(_fetch(_generic_policy(sim), url))
    assert "secret-sig" not in str(caught.value)
    assert "ALLOW_PRIVATE_ADDRESSES" in str(caught.value)
    assert sim.stats.count(route=STORAGE) == before


def test_a_redirect_to_a_non_public_address_is_refused(sim: SimulatorServer) -> None:
    """The trusted API is asked; its 302 to storage on loopback is refused at the hop."""
    job = sim.generic.add_task(
        file_size=10, shape={"outputs_at": "redirect", "storage_host": "localhost"}
    )
    url = f"{sim.generic_url}api/jobs/{job.id}/files/{job.script.file_name}"
    with pytest.raises(UrlRefused, match=r"localhost .* loopback"):
        asyncio.run(_fetch(_generic_policy(sim), url, {"X-Api-Key": "sim-key"}))
    assert sim.stats.count(route=FILES, task=job.id) == 1
    assert sim.stats.count(route=STORAGE, task=job.id) == 0


def test_allowing_private_addresses_lets_loopback_through(sim: SimulatorServer) -> None:
    """With allow_private the same loopback URL is fetched (the switch tests and the demo use)."""
    response = asyncio.run(
        _fetch(_generic_policy(sim, allow_private=True), f"http://localhost:{sim.port}/")
    )
    assert response.status_code < 500


def test_a_host_outside_output_hosts_is_refused(sim: SimulatorServer) -> None:
    """A host not in output_hosts is refused before DNS and before anything is sent."""
    policy = _generic_policy(sim, hosts=("*.amazonaws.com",), allow_private=True)
    with pytest.raises(UrlRefused, match="not in the allowed output hosts"):
        asyncio.run(_fetch(policy, f"http://localhost:{sim.port}/generic/storage/a/b"))


def test_the_address_actually_reached_is_checked_too(sim: SimulatorServer) -> None:
    """DNS rebinding: a response from a non-public peer is refused even when the request
    check was passed (here: a policy that let the request through, then a strict one)."""

    async def run() -> None:
        async with build_client(HttpSettings(connect_timeout=2)) as client:
            response = await client.get(f"http://localhost:{sim.port}/", extensions={})
            try:
                await Guard(_generic_policy(sim, trusted=frozenset())).check_response(response)
            finally:
                await response.aclose()

    with pytest.raises(UrlRefused, match=r"loopback"):
        asyncio.run(run())


# -- end to end: the watch ends in error, with the reason ---------------------------------------


@pytest.fixture(scope="module")
def strict_warden(
    tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer
) -> Iterator[Warden]:
    """A warden with the default policy (no private addresses), one profile open to any
    public host and one that only allows storage.example.com."""
    acme = generic_profile(sim.generic_url)
    env = {
        "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "false",
        "TASKWARDEN_PROVIDERS__HTTP__PROFILES": json.dumps(
            {"open": acme, "strict": {**acme, "output_hosts": ["storage.example.com"]}}
        ),
    }
    with running_warden(tmp_path_factory.mktemp("security"), sim, **env) as w:
        yield w


@pytest.mark.parametrize(
    ("profile_name", "shape", "reason"),
    [
        ("open", {"outputs_at": "storage", "storage_host": "169.254.169.254"}, "cloud metadata"),
        ("open", {"outputs_at": "storage", "storage_host": "10.0.0.1"}, "private address"),
        ("open", {"outputs_at": "storage", "storage_host": "[::1]"}, "loopback"),
        ("open", {"outputs_at": "redirect", "storage_host": "localhost"}, "loopback"),
        ("strict", {"outputs_at": "storage", "storage_host": "localhost"}, "output_hosts"),
        ("strict", {"outputs_at": "redirect", "storage_host": "localhost"}, "output_hosts"),
    ],
)
def test_a_platform_url_to_a_forbidden_place_ends_the_watch_in_error(
    strict_warden: Warden, profile_name: str, shape: dict[str, str], reason: str, tmp_path: Path
) -> None:
    """The watch ends in error saying why, at once (no retries), and storage served nothing."""
    sim = strict_warden.sim
    job = sim.generic.add_task(file_size=100, shape=shape)
    remote = f"{profile_name}:{job.id}"
    strict_warden.send_track(provider="http", remote_id=remote, params={"project": "demo"})
    watch = strict_warden.wait_final(watch_id("http", remote), timeout=60)
    assert watch.state is State.ERROR, watch.last_error
    assert reason in (watch.last_error or ""), watch.last_error
    assert "sig=" not in (watch.last_error or "")
    assert watch.errors == 1  # permanent: no retry storm
    assert sim.stats.count(route=STORAGE, task=job.id) == 0
