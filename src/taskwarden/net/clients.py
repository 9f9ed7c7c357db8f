"""The providers' HTTP clients of one worker process, built once and closed at its exit.

:func:`provider_clients` gives each provider its own client, so each has its own hooks (its URL
guard, its rate limit), over one shared set of connection pools. On every request, redirects
included, the hooks run in this order: the provider's URL guard (:class:`~.urls.Guard`), then
its ``before_request`` wait (the worker's cluster-wide rate limit), so a refused URL never spends
a rate-limit slot. Every response is then checked by the guard and counted by
:class:`HttpErrors` when it is an error.

Callers above this package see :data:`HttpClient` as an opaque handle to give to a provider
factory; nothing here leaks another httpx type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from taskwarden.config import Settings
from taskwarden.net.client import build_client
from taskwarden.net.transport import ShardedTransport
from taskwarden.net.urls import Guard, policy_for

# what a provider factory receives (see taskwarden.providers.base.ProviderFactory)
HttpClient = httpx.AsyncClient
# awaited before every request of one provider, redirects included; its result is ignored
BeforeRequest = Callable[[], Awaitable[object]]


class HttpErrors:
    """Counts every 4xx/5xx answer a provider's client receives (in-call retries, token
    requests and downloads included), in memory until the next :meth:`drain`; one per process."""

    def __init__(self) -> None:
        self._unreported: dict[tuple[str, int], int] = defaultdict(int)

    def install(self, client: HttpClient, provider: str) -> None:
        async def count(response: httpx.Response) -> None:
            if response.status_code >= 400:
                self._unreported[(provider, response.status_code)] += 1

        hooks = client.event_hooks
        client.event_hooks = {**hooks, "response": [*hooks.get("response", []), count]}

    def drain(self) -> dict[tuple[str, int], int]:
        """Error answers per (provider, status) since the last call (``metrics.Batch.http_errors``
        takes this mapping)."""
        errors, self._unreported = dict(self._unreported), defaultdict(int)
        return errors


@dataclass
class ProviderClients:
    """One client per provider name, and the counter of their error answers."""

    clients: dict[str, HttpClient]
    errors: HttpErrors = field(default_factory=HttpErrors)

    async def aclose(self) -> None:
        """Close every client (their shared pools with them)."""
        for client in self.clients.values():
            await client.aclose()


def provider_clients(
    settings: Settings,
    names: Iterable[str],
    *,
    before_request: Mapping[str, BeforeRequest] | None = None,
) -> ProviderClients:
    """A guarded, counted client for each provider in ``names``, sharing one set of pools.

    ``before_request`` maps a provider name to what its client awaits before every request
    (after the URL guard); a provider not in it waits for nothing.
    """
    waits = before_request or {}
    # one set of connection pools; a client per provider, so each has its own rate limit
    transport = ShardedTransport(settings.http.max_connections, settings.http.connections_per_pool)
    errors = HttpErrors()
    clients: dict[str, HttpClient] = {}
    for name in names:
        wait = waits.get(name)
        hook = _awaiting(wait) if wait is not None else None
        client = build_client(settings.http, transport=transport, before_request=hook)
        Guard(policy_for(settings, name)).install(client)  # goes first: before the wait
        errors.install(client, name)
        clients[name] = client
    return ProviderClients(clients, errors)


def _awaiting(wait: BeforeRequest) -> Callable[[httpx.Request], Awaitable[None]]:
    async def before(request: httpx.Request) -> None:
        await wait()

    return before
