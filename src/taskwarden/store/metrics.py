"""The figures a scrape, ``/v1/stats``, ``/readyz`` and ``taskwarden stats`` read, kept beside
the watches (names in :mod:`taskwarden.keys`):

- ``metrics`` hash: counter and histogram cells summed over every process (what the fields
  mean: :mod:`taskwarden.metrics`), incremented by :meth:`StoreMetrics.add_metrics`;
- ``metrics:recent:<bucket>`` hashes, one per 10-second bucket, expiring on their own: the
  recent polls, errors and rate-limit waits per provider;
- the live figures read from the indexes at scrape time (:meth:`StoreMetrics.live_figures`):
  watches by state and by provider, how long the longest-waiting due watch has waited, the
  messages waiting on each broker queue, the live workers of each queue (from the
  ``heartbeat:workers`` registry), each provider's oldest running watch (the oldest entries of
  ``state:running``, read a chunk at a time up to :data:`OLDEST_SCAN`), the watches whose
  checks are failing (``failing:<provider>``) and the open circuits
  (:mod:`taskwarden.store.circuits`), the dead-letter stream's length and the webhook backlog.
  No SCAN and no walk over the watches: a scrape costs a few round trips whatever their number.

:class:`StoreMetrics` is mixed into :class:`~taskwarden.store.Store`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

from redis import Redis

from taskwarden import keys, metrics
from taskwarden.lifecycle import State

if TYPE_CHECKING:
    from taskwarden.circuit import Circuit

OLDEST_SCAN = 1000  # running watches read (oldest first) to find each provider's oldest
OLDEST_CHUNK = 250


class StoreMetrics:
    """Metric cells and live figures; a mixin of :class:`~taskwarden.store.Store`, which
    provides ``redis``."""

    redis: Redis

    if TYPE_CHECKING:  # what the other mixins of Store give a scrape

        def workers(self) -> dict[str, tuple[float, list[str] | None]]: ...
        def circuits(self, providers: Sequence[str]) -> dict[str, Circuit]: ...
        def failing_counts(self, providers: Sequence[str]) -> dict[str, int]: ...

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

    def live_figures(self, now: float) -> metrics.Live:
        """Everything a scrape reports beside the counters, read at ``now``."""
        watches = self.counts_by_provider()
        pipe = self.redis.pipeline(transaction=False)
        for queue in keys.ALL_QUEUES:
            for name in keys.broker_lists(queue):
                pipe.llen(name)
        pipe.xlen(keys.DEADLETTERS)
        pipe.hlen(keys.WEBHOOKS_PENDING)
        raw = cast(list[int], pipe.execute())
        width = len(keys.BROKER_PRIORITIES) + 1
        queues = {
            queue: sum(raw[i * width : (i + 1) * width]) for i, queue in enumerate(keys.ALL_QUEUES)
        }
        dead, backlog = raw[len(keys.ALL_QUEUES) * width :]
        # a node of a taskwarden from before workers reported their queues says none: not counted
        nodes = [qs for _, qs in self.workers().values() if qs]
        workers = {q: sum(1 for qs in nodes if q in qs) for q in keys.ALL_QUEUES}
        providers = list(watches)
        running = {p for p, states in watches.items() if states.get(State.RUNNING)}
        oldest = self.oldest_running(running)
        return metrics.Live(
            watches=watches,
            dispatch_lag=self.dispatch_lag(now),
            queues=queues,
            workers=workers,
            oldest_running={
                p: max(0.0, now - oldest[p]) if p in oldest else 0.0
                for p in watches
                if p in oldest or p not in running
            },
            circuits={p: c.is_open for p, c in self.circuits(providers).items()},
            failing=self.failing_counts(providers),
            dead_letters=int(dead),
            webhook_backlog=int(backlog),
        )

    def oldest_running(self, providers: set[str], limit: int = OLDEST_SCAN) -> dict[str, float]:
        """When each of ``providers``' oldest running watch entered ``running``: the oldest
        entries of ``state:running`` are read a chunk at a time, at most ``limit`` of them, so
        a provider whose oldest is not among them is left out."""
        found: dict[str, float] = {}
        start = 0
        while providers - found.keys() and start < limit:
            rows = cast(
                list[tuple[str, float]],
                self.redis.zrange(
                    keys.by_state(State.RUNNING), start, start + OLDEST_CHUNK - 1, withscores=True
                ),
            )
            if not rows:
                break
            pipe = self.redis.pipeline(transaction=False)
            for wid, _ in rows:
                pipe.hget(keys.watch(wid), "provider")
            for (_, at), provider in zip(rows, pipe.execute(), strict=True):
                if provider in providers and provider not in found:
                    found[provider] = at
            start += len(rows)
        return found
