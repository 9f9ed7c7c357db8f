"""Prometheus metrics that are right across Celery's prefork processes and across hosts.

Every process adds what it saw to a :class:`Batch` in memory and hands it to the store in one
pipeline per unit of work (a poll batch, an archive, a webhook batch;
:meth:`~taskwarden.store.Store.add_metrics`): counters and histogram buckets are fields of one
hash (``keys.METRICS``) incremented with HINCRBY / HINCRBYFLOAT, so all processes on all hosts
add up to one set of totals. A scrape (:func:`exposition`) is built from that hash and the
store's live figures (:class:`Live`: watches by provider and state, dispatch lag, queue depths,
live workers, the oldest running and the failing watches, open circuits, dead letters, the
webhook backlog),
all read by the caller through the store.

Per-provider rates over the last minute (:func:`recent_rates`, for ``/v1/stats``) come from
small hashes per 10-second bucket (``keys.METRICS_RECENT``), written in the same pipeline and
expiring on their own (:func:`recent_window` names the buckets to read).

A hash field is ``<metric>|<label values, '|'-joined>`` (histograms add ``|<bucket index>``
or ``|sum``); label values are provider names, outcomes, HTTP status codes and
states, none of which can hold a ``|``. Nothing here touches Redis.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

SEP = "|"
RECENT_BUCKET = 10  # seconds per recent-rates bucket
RECENT_TTL = 180  # seconds a recent-rates bucket is kept (covers the longest window asked)

POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ARCHIVE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True)
class Counter:
    name: str  # without the ``taskwarden_`` prefix and ``_total`` suffix
    doc: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Histogram:
    name: str
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]


POLLS = Counter("polls", "Status checks made, by provider and outcome.", ("provider", "outcome"))
ARCHIVE_BYTES = Counter("archive_bytes", "Bytes of outputs archived.", ("provider",))
RATE_LIMIT_WAITS = Counter(
    "rate_limit_waits", "Requests that waited for a rate-limit slot.", ("provider",)
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "rate_limit_wait_seconds", "Seconds spent waiting for rate-limit slots.", ("provider",)
)
HTTP_ERRORS = Counter(
    "http_errors", "HTTP error answers from platforms, by status code.", ("provider", "status")
)
ARCHIVES = Counter("archives", "Archive runs, by provider and outcome.", ("provider", "outcome"))
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries",
    "Webhook delivery attempts: delivered, retrying (failed, will retry), failed (gave up).",
    ("outcome",),
)
WATCHES_REMOVED = Counter(
    "watches_removed", "Final watches the retention sweep removed from Redis.", ()
)
CIRCUIT_OPENED = Counter(
    "circuit_opened",
    "Times a provider's circuit breaker opened (its checks kept failing).",
    ("provider",),
)
DEAD_LETTERS = Counter(
    "dead_letters",
    "Messages and registrations refused and kept on the dead-letter stream, by source.",
    ("source",),
)
COUNTERS = (
    POLLS,
    ARCHIVE_BYTES,
    RATE_LIMIT_WAITS,
    RATE_LIMIT_WAIT_SECONDS,
    HTTP_ERRORS,
    ARCHIVES,
    WEBHOOK_DELIVERIES,
    WATCHES_REMOVED,
    CIRCUIT_OPENED,
    DEAD_LETTERS,
)

POLL_DURATION = Histogram(
    "poll_duration_seconds", "Time of one status check.", ("provider",), POLL_BUCKETS
)
ARCHIVE_DURATION = Histogram(
    "archive_duration_seconds", "Time of one archive run.", ("provider",), ARCHIVE_BUCKETS
)
HISTOGRAMS = (POLL_DURATION, ARCHIVE_DURATION)

# what recent_rates reports, per provider
RECENT_POLLS, RECENT_ERRORS, RECENT_WAITS = "polls", "errors", "rate_limit_waits"


@dataclass(frozen=True)
class Cells:
    """What a :class:`Batch` adds to the totals: hash fields to increment by an integer or by a
    float, and recent-rates fields for the current 10-second bucket."""

    ints: dict[str, int]
    floats: dict[str, float]
    recent: dict[str, int]

    def __bool__(self) -> bool:
        return bool(self.ints or self.floats or self.recent)


@dataclass
class Batch:
    """What one process saw during one unit of work, added up before a single flush."""

    ints: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    floats: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    recent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # checks as (provider, outcome, seconds), folded into the cells at the flush: a poll batch
    # records a hundred, and counting them in one go is several times cheaper than one by one
    polls: list[tuple[str, str, float]] = field(default_factory=list)

    def inc(self, counter: Counter, *labels: str, by: int = 1) -> None:
        self.ints[_field(counter.name, labels)] += by

    def add(self, counter: Counter, *labels: str, by: float) -> None:
        self.floats[_field(counter.name, labels)] += by

    def observe(self, hist: Histogram, value: float, *labels: str) -> None:
        index = bisect.bisect_left(hist.buckets, value)  # len(buckets) is +Inf
        self.ints[_field(hist.name, (*labels, str(index)))] += 1
        self.floats[_field(hist.name, (*labels, "sum"))] += value

    # the calls the worker makes

    def poll(self, provider: str, outcome: str, seconds: float) -> None:
        """One status check: ``outcome`` is ok, retryable_error or permanent_error."""
        self.polls.append((provider, outcome, seconds))

    def _fold_polls(self) -> None:
        polls, self.polls = self.polls, []
        if not polls:
            return
        buckets = POLL_DURATION.buckets
        for (provider, outcome), n in Tally((p, o) for p, o, _ in polls).items():
            self.inc(POLLS, provider, outcome, by=n)
            self.recent[provider + SEP + RECENT_POLLS] += n
            if outcome != "ok":
                self.recent[provider + SEP + RECENT_ERRORS] += n
        for (provider, index), n in Tally(
            (p, bisect.bisect_left(buckets, x)) for p, _, x in polls
        ).items():
            self.ints[_field(POLL_DURATION.name, (provider, str(index)))] += n
        for provider in {p for p, _, _ in polls}:
            total = math.fsum(x for p, _, x in polls if p == provider)
            self.floats[_field(POLL_DURATION.name, (provider, "sum"))] += total

    def archive(self, provider: str, outcome: str, seconds: float, size: int) -> None:
        self.inc(ARCHIVES, provider, outcome)
        self.observe(ARCHIVE_DURATION, seconds, provider)
        if size:
            self.inc(ARCHIVE_BYTES, provider, by=size)

    def http_errors(self, errors: Mapping[tuple[str, int], int]) -> None:
        """Error answers per (provider, status), from :meth:`taskwarden.net.HttpErrors.drain`."""
        for (provider, status), count in errors.items():
            self.inc(HTTP_ERRORS, provider, str(status), by=count)

    def rate_limit_waits(self, waits: Mapping[str, tuple[int, float]]) -> None:
        """Waits per provider as ``(count, seconds)``, from :meth:`RateLimiter.drain`."""
        for provider, (count, seconds) in waits.items():
            self.inc(RATE_LIMIT_WAITS, provider, by=count)
            self.add(RATE_LIMIT_WAIT_SECONDS, provider, by=seconds)
            self.recent[provider + SEP + RECENT_WAITS] += count

    def webhook(self, outcome: str) -> None:
        self.inc(WEBHOOK_DELIVERIES, outcome)

    def drain(self) -> Cells:
        """Everything seen since the last drain, as cells to add (the store's
        :meth:`~taskwarden.store.Store.add_metrics` does), and start afresh."""
        self._fold_polls()
        cells = Cells(dict(self.ints), dict(self.floats), dict(self.recent))
        self.ints.clear()
        self.floats.clear()
        self.recent.clear()
        return cells


def _field(name: str, labels: Iterable[str]) -> str:
    return SEP.join((name, *labels))


def dead_letter_field(source: str) -> str:
    """The cell a dead letter from ``source`` adds one to (the store writes it beside the
    dead letter itself)."""
    return _field(DEAD_LETTERS.name, (source.replace(SEP, "_"),))


@dataclass(frozen=True)
class Live:
    """The figures a scrape reads from the store's indexes at scrape time
    (:meth:`~taskwarden.store.Store.live_figures`), beside the counters' cells."""

    watches: Mapping[str, Mapping[str, int]]  # provider -> state -> watches in it
    dispatch_lag: float  # seconds the longest-waiting due watch has waited
    queues: Mapping[str, int]  # queue -> messages waiting on it
    workers: Mapping[str, int]  # queue -> live worker nodes consuming it
    oldest_running: Mapping[str, float]  # provider -> age (s) of its oldest running watch
    circuits: Mapping[str, bool]  # provider -> whether its circuit breaker is open
    failing: Mapping[str, int]  # provider -> live watches whose checks are failing
    dead_letters: int  # entries kept on the dead-letter stream (capped)
    webhook_backlog: int  # webhook deliveries still to be made (due or retrying)


def recent_bucket(now: float) -> int:
    """The start (unix s) of the recent-rates bucket ``now`` falls in."""
    return int(now // RECENT_BUCKET) * RECENT_BUCKET


def recent_window(now: float, window_s: float = 60) -> range:
    """The starts of the buckets that make the last ``window_s`` seconds: whole 10-second
    buckets, the current (partial) one included."""
    window_s = min(max(window_s, RECENT_BUCKET), RECENT_TTL - RECENT_BUCKET)
    current = recent_bucket(now)
    first = current - int(math.ceil(window_s / RECENT_BUCKET) - 1) * RECENT_BUCKET
    return range(first, current + 1, RECENT_BUCKET)


def recent_rates(cells: Mapping[int, Mapping[str, str]], now: float) -> dict[str, dict[str, float]]:
    """Per provider: polls, errors and rate-limit waits per second over the buckets in
    ``cells`` (bucket start -> its fields, as :meth:`~taskwarden.store.Store.recent_cells`
    reads the :func:`recent_window`). The rate divides by the time those buckets actually
    cover."""
    if not cells:
        return {}
    totals: dict[str, dict[str, float]] = {}
    for fields in cells.values():
        for name, value in fields.items():
            provider, _, what = name.rpartition(SEP)
            slot = totals.setdefault(
                provider, {RECENT_POLLS: 0.0, RECENT_ERRORS: 0.0, RECENT_WAITS: 0.0}
            )
            if what in slot:
                slot[what] += float(value)
    span = max(1.0, now - min(cells))
    return {
        provider: {f"{what}_per_s": round(n / span, 3) for what, n in slot.items()}
        for provider, slot in sorted(totals.items())
    }


class _Collector(Collector):
    """Builds every taskwarden metric family, at scrape time, from figures read for it."""

    def __init__(self, cells: Mapping[str, str], live: Live) -> None:
        self.cells = cells
        self.live = live

    def collect(self) -> Iterator[Metric]:
        by_metric: dict[str, list[tuple[list[str], str]]] = defaultdict(list)
        for name, value in self.cells.items():
            metric, *labels = name.split(SEP)
            by_metric[metric].append((labels, value))
        for counter in COUNTERS:
            family = CounterMetricFamily(
                "taskwarden_" + counter.name, counter.doc, labels=counter.labels
            )
            for labels, value in sorted(by_metric.get(counter.name, [])):
                if len(labels) == len(counter.labels):
                    family.add_metric(labels, float(value))
            yield family
        for hist in HISTOGRAMS:
            yield _histogram(hist, by_metric.get(hist.name, []))
        yield from self._live()

    def _live(self) -> Iterator[Metric]:
        live = self.live
        watches = GaugeMetricFamily(
            "taskwarden_watches", "Watches by provider and state.", labels=("provider", "state")
        )
        for provider, states in sorted(live.watches.items()):
            for state, n in states.items():
                watches.add_metric([provider, state], n)
        yield watches
        yield GaugeMetricFamily(
            "taskwarden_dispatch_lag_seconds",
            "Seconds the longest-waiting watch has waited for its check (due and unclaimed, or"
            " claimed and not yet committed).",
            value=live.dispatch_lag,
        )
        yield _by_label("taskwarden_queue_messages", "Messages waiting on each broker queue.",
                        "queue", live.queues)  # fmt: skip
        yield _by_label("taskwarden_workers", "Live worker nodes consuming each queue.",
                        "queue", live.workers)  # fmt: skip
        yield _by_label(
            "taskwarden_oldest_running_seconds",
            "Age of each provider's oldest running watch (since it entered running; 0: none).",
            "provider",
            live.oldest_running,
        )
        yield _by_label(
            "taskwarden_circuit_open",
            "1 while a provider's circuit breaker is open (only probes are sent), else 0.",
            "provider",
            {provider: 1.0 if is_open else 0.0 for provider, is_open in live.circuits.items()},
        )
        yield _by_label(
            "taskwarden_watches_failing",
            "Live watches whose last checks failed, by provider.",
            "provider",
            live.failing,
        )
        yield GaugeMetricFamily(
            "taskwarden_dead_letters_stored",
            "Entries on the dead-letter stream (capped; taskwarden deadletters lists them).",
            value=live.dead_letters,
        )
        yield GaugeMetricFamily(
            "taskwarden_webhook_backlog",
            "Webhook deliveries still to be made (due now, or waiting to retry).",
            value=live.webhook_backlog,
        )


def _by_label(name: str, doc: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=(label,))
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _histogram(hist: Histogram, rows: list[tuple[list[str], str]]) -> HistogramMetricFamily:
    series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    width = len(hist.labels)
    for labels, value in rows:
        if len(labels) == width + 1:
            series[tuple(labels[:width])][labels[width]] = float(value)
    family = HistogramMetricFamily("taskwarden_" + hist.name, hist.doc, labels=hist.labels)
    bounds = [*(repr(b) for b in hist.buckets), "+Inf"]
    for label_values, cells in sorted(series.items()):
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for index, bound in enumerate(bounds):
            cumulative += cells.get(str(index), 0.0)
            buckets.append((bound, cumulative))
        family.add_metric(list(label_values), buckets, cells.get("sum", 0.0))
    return family


def exposition(cells: Mapping[str, str], live: Live) -> tuple[bytes, str]:
    """The Prometheus text exposition of every taskwarden metric: (body, content type).

    ``cells``: the totals (:meth:`~taskwarden.store.Store.metric_cells`); ``live``: the figures
    read from the indexes (:meth:`~taskwarden.store.Store.live_figures`).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(cells, live))
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
