"""Which URLs a provider's HTTP client may fetch: the operator's, and the platform's within limits.

A URL's origin (scheme, host, port) is *trusted* when the operator configured it: a provider's
API and token URLs in settings (:func:`policy_for`). Everything else was handed over by the
platform (a signed download URL, an asset ``href``, a redirect's ``Location``, an inline
``http`` profile) and must pass two checks before a byte is sent:

1. its host matches the provider's ``output_hosts`` (``*.example.com`` matches subdomains;
   an empty list allows any host), and
2. every address the host resolves to, IPv4 and IPv6, is public: loopback, private (RFC 1918,
   ``fc00::/7``), link-local (``169.254.0.0/16`` with the cloud metadata service,
   ``fe80::/10``), shared (``100.64.0.0/10``), unspecified (``0.0.0.0``, ``::``), multicast and
   reserved addresses are refused (IPv4-mapped IPv6 is judged by its IPv4 address) unless the
   provider's ``allow_private_addresses`` (or ``TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES``)
   says otherwise.

:class:`Guard` enforces both as httpx event hooks on the provider's client, so redirects
(which httpx sends through the same hooks) are checked hop by hop. Resolution runs on the event
loop's resolver (``loop.getaddrinfo``, in a thread). Because the connection resolves the name a
second time, a DNS answer that changes in between (rebinding) could slip past the first check;
the response hook closes that gap by checking the address the connection actually reached
(httpcore's ``network_stream`` ``server_addr``) before a byte of the body is read. The request
itself has then been sent, which is why the first check exists too.

A refusal is :class:`~taskwarden.errors.UrlRefused` (permanent): the watch ends in ``error``
saying which URL (without its query string) and why.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx

from taskwarden.config import Settings
from taskwarden.errors import ProviderUnavailable, UrlRefused

Origin = tuple[str, str, int | None]
NO_ORIGIN: Origin = ("", "", None)  # what a URL that cannot be read has
DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address in an IPv6 one


def origin(url: str | httpx.URL) -> Origin:
    """(scheme, host, port) of ``url`` in one canonical form, so that two spellings of one
    origin compare equal and two origins never do. The one origin rule of the package: the
    URL guard's trusted origins, the generic provider's same-origin credentials and output
    hosts, UP42's token, webhook URLs.

    The URL is read by httpx, the client that sends every request, so the origin judged is the
    one a request goes to. Then:

    - scheme and host are lower-cased;
    - the host's trailing dot is dropped: ``example.com.`` is the DNS name ``example.com``
      (and :func:`host_allowed` judges it so);
    - an internationalised host is in the ASCII (punycode) form httpx sends;
    - an IPv6 literal is bare (no brackets) and compressed: ``[0:0::1]`` is ``::1``;
    - user info is not part of it: ``https://api.example.com@evil.test/`` is on evil.test;
    - the scheme's default port is filled in (``https://h/`` and ``https://h:443/`` are one
      origin); an explicit port is kept, ``:0`` included.

    A URL httpx cannot read, or whose port is not in 0-65535, has no origin, ``("", "", None)``,
    which equals no real one: every check refuses an empty host, and no trusted origin has one.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        port = parsed.port
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        return NO_ORIGIN
    if port is not None and not 0 <= port <= 65535:
        return NO_ORIGIN
    host = host.lower().rstrip(".")
    address = literal(unquote(host)) if ":" in host else None
    if address is not None:
        host = str(address)
    scheme = parsed.scheme.lower()
    return scheme, host, DEFAULT_PORTS.get(scheme) if port is None else port


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` is in the allow-list (``*.example.com`` matches its subdomains, not
    ``example.com`` itself); an empty list allows any host."""
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for pattern in (p.strip().lower().rstrip(".") for p in allowed):
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) >= len(pattern):
            return True
        if host == pattern:
            return True
    return False


def non_public(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address (a short phrase), or None if it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            why = non_public(embedded)
            return None if why is None else f"{why} (as {embedded})"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        metadata = address == ipaddress.IPv4Address("169.254.169.254")
        return "the cloud metadata address" if metadata else "a link-local address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_private:
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, when it is an IP literal (``[::1]`` too)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Policy:
    """What one provider's client may fetch (see the module docstring)."""

    provider: str
    trusted: frozenset[Origin] = frozenset()
    hosts: tuple[str, ...] = ()
    allow_private: bool = False
    setting: str = field(default="", compare=False)  # the variable that allows private addresses

    def is_trusted(self, url: str | httpx.URL) -> bool:
        return origin(url) in self.trusted


def _origins(urls: Iterable[str | None]) -> frozenset[Origin]:
    found = set()
    for url in urls:
        if url and "{" not in urlsplit(url).netloc:  # a templated host is not one origin
            found.add(origin(url))
    return frozenset(found - {NO_ORIGIN})  # a URL that cannot be read trusts nothing


def policy_for(settings: Settings, provider: str) -> Policy:
    """The URL policy of ``provider`` under ``settings``.

    A plugin provider (unknown here) trusts no origin: all its requests are checked, with the
    global ``allow_private_addresses``.
    """
    default = settings.http.allow_private_addresses
    prefix = f"TASKWARDEN_PROVIDERS__{provider.upper()}__ALLOW_PRIVATE_ADDRESSES"
    p = settings.providers
    trusted: frozenset[Origin]
    hosts: Sequence[str] = ()
    own: bool | None = None
    if provider == "geobox":
        trusted = _origins([p.geobox.base_url])
        hosts, own = p.geobox.output_hosts, p.geobox.allow_private_addresses
    elif provider == "up42":
        trusted = _origins([p.up42.base_url, p.up42.token_url])
        hosts, own = p.up42.output_hosts, p.up42.allow_private_addresses
    elif provider == "descarteslabs":
        dl = p.descarteslabs
        trusted = _origins([dl.vector_url, dl.storage_url, dl.accounts_url])
        hosts, own = dl.output_hosts, dl.allow_private_addresses
    elif provider == "earthone":
        eo = p.earthone
        trusted = _origins([eo.compute_url, eo.catalog_url, eo.iam_url])
        hosts, own = eo.output_hosts, eo.allow_private_addresses
    elif provider == "isahit":
        trusted = _origins([p.isahit.base_url])
        hosts, own = p.isahit.output_hosts, p.isahit.allow_private_addresses
    elif provider == "http":
        # each profile's output_hosts is checked by the provider itself, per profile
        profiles = p.http.profiles.values()
        trusted = _origins(
            url
            for prof in profiles
            for url in (prof.status_url, prof.abort_url, prof.token.url if prof.token else None)
        )
        own = p.http.allow_private_addresses
    else:
        trusted = frozenset()
        prefix = "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES"
    allow = default if own is None else own
    return Policy(provider, trusted, tuple(hosts), allow, prefix)


class Guard:
    """The httpx hooks that hold one provider's client to its :class:`Policy`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def install(self, client: httpx.AsyncClient) -> None:
        """Check every request first (before a rate-limit wait), and every response's peer."""
        hooks = client.event_hooks
        client.event_hooks = {
            "request": [self.check_request, *hooks.get("request", [])],
            "response": [self.check_response, *hooks.get("response", [])],
        }

    async def check_request(self, request: httpx.Request) -> None:
        """Refuse ``request`` (UrlRefused) unless its URL is trusted or passes the policy."""
        policy, url = self.policy, request.url
        if policy.is_trusted(url):
            return
        scheme, host, port = origin(url)
        if scheme not in ("http", "https") or not host:
            raise self._refused(url, "it is not an http(s) URL")
        if not host_allowed(host, policy.hosts):
            name = policy.provider.upper()
            raise self._refused(
                url,
                f"{host} is not in the allowed output hosts"
                f" (TASKWARDEN_PROVIDERS__{name}__OUTPUT_HOSTS)",
            )
        if policy.allow_private:
            return
        for address in await self._resolve(url, host, port):
            why = non_public(address)
            if why is not None:
                raise self._refused(url, self._private(host, address, why))

    async def check_response(self, response: httpx.Response) -> None:
        """Refuse a response whose connection reached a non-public address (DNS rebinding)."""
        policy = self.policy
        if policy.allow_private or policy.is_trusted(response.request.url):
            return
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if not peer:
            return  # no socket to ask (a test transport, a proxy): the request check stood
        address = literal(str(peer[0]).split("%", 1)[0])
        why = None if address is None else non_public(address)
        if address is not None and why is not None:
            host = origin(response.request.url)[1]
            raise self._refused(response.request.url, self._private(host, address, why))

    async def _resolve(self, url: httpx.URL, host: str, port: int | None) -> list[IPAddress]:
        address = literal(host)
        if address is not None:
            return [address]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ProviderUnavailable(
                f"GET {_public(url)}: cannot resolve {host} ({exc})",
                provider=self.policy.provider,
            ) from exc
        found = [literal(str(info[4][0]).split("%", 1)[0]) for info in infos]
        return [a for a in found if a is not None]

    def _private(self, host: str, address: IPAddress, why: str) -> str:
        return private_reason(self.policy, host, address, why)

    def _refused(self, url: httpx.URL, reason: str) -> UrlRefused:
        return UrlRefused(
            f"refused to fetch {_public(url)}, a URL the platform handed over: {reason}",
            provider=self.policy.provider,
        )


def private_reason(policy: Policy, host: str, address: IPAddress, why: str) -> str:
    """Why ``host`` (standing for ``address``, ``why`` says what kind) is refused, and the
    setting that would allow it: the words of every private-address refusal."""
    shown = host if literal(host) is not None else f"{host} ({address})"
    return f"{shown} is {why}; set {policy.setting}=true to allow it"


def _public(url: httpx.URL | str) -> str:
    """``url`` without user info, query or fragment, where signatures and keys travel."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{parts.path}"
