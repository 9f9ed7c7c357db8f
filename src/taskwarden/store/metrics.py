"""The figures a scrape, ``/v1/stats``, ``/readyz`` and ``taskwarden stats`` read, kept beside
the watches (names in :mod:`taskwarden.keys`):

- ``metrics`` hash: counter and histogram cells summed over every process (what the fields
  mean: :mod:`taskwarden.metrics`), incremented by :meth:`StoreMetrics.add_metrics`;
- ``metrics:recent:<bucket>`` hashes, one per 10-second bucket, expiring on their own: the
  recent polls, errors and rate-limit waits per provider;
- the live figures read from the watch indexes: watches by state and by provider, and how long
  the longest-waiting due watch has waited.

:class:`StoreMetrics` is mixed into :class:`~taskwarden.store.Store`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from redis import Redis

from taskwarden import keys, metrics
from taskwarden.lifecycle import State


class StoreMetrics:
    """Metric cells and live figures; a mixin of :class:`~taskwarden.store.Store`, which
    provides ``redis``."""

    redis: Redis

    # the totals every process adds to

    def add_metrics(self, batch: metrics.Batch, now: float | None = None) -> None:
        """Add what ``batch`` saw to the totals in one pipeline (its recent rates to the bucket
        of ``now``, by default the clock's), and start the batch afresh."""
        cells = batch.drain()
        if not cells:
            return
        pipe = self.redis.pipeline(transaction=False)
        for name, n in cells.ints.items():
            pipe.hincrby(keys.METRICS, name, n)
        for name, x in cells.floats.items():
            pipe.hincrbyfloat(keys.METRICS, name, x)
        if cells.recent:
            bucket = keys.metrics_recent(metrics.recent_bucket(time.time() if now is None else now))
            for name, n in cells.recent.items():
                pipe.hincrby(bucket, name, n)
            pipe.expire(bucket, metrics.RECENT_TTL)
        pipe.execute()

    def metric_cells(self) -> dict[str, str]:
        """Every counter and histogram cell, for :func:`taskwarden.metrics.exposition`."""
        return self.redis.hgetall(keys.METRICS)  # type: ignore[return-value]

    def recent_cells(self, buckets: Iterable[int]) -> dict[int, dict[str, str]]:
        """The fields of each recent-rates bucket (by its start; empty when it has expired or
        saw nothing), for :func:`taskwarden.metrics.recent_rates`."""
        starts = list(buckets)
        pipe = self.redis.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(keys.metrics_recent(start))
        return dict(zip(starts, pipe.execute(), strict=True))

    # live figures, read from the watch indexes

    def providers(self) -> list[str]:
        """The providers that have (or had) watches."""
        return sorted(self.redis.smembers(keys.PROVIDERS))  # type: ignore[arg-type]

    def counts(self) -> dict[str, int]:
        """Watches by state (every state present, zeros included)."""
        pipe = self.redis.pipeline(transaction=False)
        for state in State:
            pipe.zcard(keys.by_state(state))
        return dict(zip([str(s) for s in State], pipe.execute(), strict=True))

    def counts_by_provider(self) -> dict[str, dict[str, int]]:
        """Watches per provider and state (every state present, zeros included)."""
        names = self.providers()
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.counts(name))
        return {
            name: {str(s): int(raw.get(s, 0)) for s in State}
            for name, raw in zip(names, pipe.execute(), strict=True)
        }

    def dispatch_lag(self, now: float) -> float:
        """Seconds the longest-waiting watch has waited for its check (0 when none does): due
        and not claimed, or claimed and not yet committed (a backlog held in leases, a check
        that hangs, a lease that expired and is not reaped yet count from their claim)."""
        names = self.providers()
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zrange(keys.due(name), 0, 0, withscores=True)
            pipe.zrange(keys.in_flight(name), 0, 0, withscores=True)
        oldest = [first[0][1] for first in pipe.execute() if first]
        return max(0.0, now - min(oldest)) if oldest else 0.0
