"""The composition root of a worker process: what it builds once, after the fork
(``worker_process_init``), and closes at its exit.

A :class:`Runtime` holds the store, the event loop every async call runs on, the rate limiter,
one HTTP client per provider (:func:`taskwarden.net.provider_clients`: URL guard, then rate
limit, on every request), the provider adapters built over them, the archive store, the webhook
sender and the :class:`~taskwarden.service.rules.Policies`. The service functions take only the
parts they use; the Celery tasks in :mod:`taskwarden.worker` hand those parts over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

from taskwarden import archive, metrics, net, webhooks
from taskwarden.config import Settings
from taskwarden.providers import factories
from taskwarden.providers.base import Provider
from taskwarden.service.polling import extend_deadline
from taskwarden.service.rules import Policies
from taskwarden.store import Limit, RateLimiter, Store

T = TypeVar("T")


class Runtime:
    """Per-process clients, built once, closed at process exit (:meth:`close`)."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.store = Store.from_url(redis_url, **settings.store_options())
        self.loop = asyncio.new_event_loop()
        self.limiter = RateLimiter.from_url(
            redis_url,
            {name: Limit(lim.rate, lim.burst) for name, lim in settings.rate_limits.items()},
        )
        built = factories()
        limited = [name for name in built if self.limiter.limited(name)]
        waits = {name: partial(self._rate_limit, name) for name in limited}
        self.clients = net.provider_clients(settings, built, before_request=waits)
        self.providers: dict[str, Provider] = {
            name: factory(settings, self.clients.clients[name]) for name, factory in built.items()
        }
        self.archive = archive.open_store(settings)
        self.policies = Policies.from_settings(settings, self.providers)
        self.webhooks = webhooks.Sender(settings, self.store)

    async def _rate_limit(self, provider: str) -> None:
        """Wait for a request's slot; a check's deadline does not count the wait."""
        wait = await self.limiter.reserve(provider)
        if wait > 0:
            extend_deadline(wait)
            await asyncio.sleep(wait)

    def record(self, seen: metrics.Batch) -> None:
        """Add ``seen``, and the rate-limit waits and HTTP errors since the last call, to the
        totals (the metrics sink of every service function)."""
        seen.rate_limit_waits(self.limiter.drain())
        seen.http_errors(self.clients.errors.drain())
        self.store.add_metrics(seen)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end on this process's event loop."""
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.clients.aclose())
        self.run(self.limiter.aclose())
        self.run(self.webhooks.aclose())
        self.run(archive.settle())  # obstore needs the loop to breathe before it closes
        self.loop.close()
        self.store.close()
