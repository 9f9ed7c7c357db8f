"""The store's metric cells and live figures on a real Redis: what every process adds up to,
and what a scrape and ``/v1/stats`` read back."""

from __future__ import annotations

from taskwarden import keys, metrics
from taskwarden.lifecycle import State
from taskwarden.models import Registration
from taskwarden.store import Store

NOW = 10_000.0  # a recent-rates bucket boundary


def test_batches_from_two_processes_add_up(store: Store) -> None:
    """Two batches flushed one after the other sum, cell by cell, into one set of totals; the
    recent rates land in the bucket of ``now``, which expires on its own."""
    for seconds in (0.02, 0.5):
        batch = metrics.Batch()
        batch.poll("geobox", "ok", seconds)
        batch.archive("geobox", "succeeded", 2.0, size=300)
        store.add_metrics(batch, now=NOW + 3)
    cells = store.metric_cells()
    assert cells["polls|geobox|ok"] == "2"
    assert cells["archive_bytes|geobox"] == "600"
    assert float(cells["poll_duration_seconds|geobox|sum"]) == 0.52
    assert cells["archives|geobox|succeeded"] == "2"
    assert store.recent_cells([int(NOW) - 10, int(NOW)]) == {
        int(NOW) - 10: {},
        int(NOW): {"geobox|polls": "2"},
    }
    assert 0 < store.redis.ttl(keys.metrics_recent(int(NOW))) <= metrics.RECENT_TTL


def test_an_empty_batch_writes_nothing(store: Store) -> None:
    """A unit of work that saw nothing costs no write (and no recent bucket)."""
    store.add_metrics(metrics.Batch(), now=NOW)
    assert store.metric_cells() == {}
    assert store.redis.keys(keys.METRICS_RECENT + "*") == []


def test_live_figures_follow_the_watches(store: Store) -> None:
    """Counts by state and provider and the dispatch lag come from the watch indexes."""
    for i in range(3):
        store.register(Registration(provider="geobox", remote_id=f"t{i}"), NOW + i)
    store.register(Registration(provider="up42", remote_id="u"), NOW + 10)
    assert store.providers() == ["geobox", "up42"]
    assert store.counts()[State.PENDING] == 4
    assert store.counts()[State.RUNNING] == 0
    assert store.counts_by_provider()["geobox"][State.PENDING] == 3
    assert store.dispatch_lag(NOW + 20) == 20.0  # geobox's first, due at NOW
    assert store.dispatch_lag(NOW - 1) == 0.0
