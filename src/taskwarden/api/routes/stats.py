"""``GET /v1/stats``: counts, dispatch lag, recent rates and live workers, for the dashboard
and for people."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from taskwarden import metrics
from taskwarden.api import schemas
from taskwarden.api.deps import READS, StoreDep
from taskwarden.api.schemas import errors
from taskwarden.circuit import Circuit

router = APIRouter(tags=["operations"])


def _circuit(circuit: Circuit) -> dict[str, Any]:
    fields = ("state", "failures", "opened_at", "closed_at", "probe_at", "probes", "opened")
    return {name: getattr(circuit, name) for name in fields}


NO_RATES = {"polls_per_s": 0.0, "errors_per_s": 0.0, "rate_limit_waits_per_s": 0.0}


@router.get("/v1/stats", dependencies=READS, response_model=schemas.Stats,
            responses=errors(401, 503))  # fmt: skip
def stats(store: StoreDep) -> dict[str, Any]:
    """Counts by state and provider, dispatch lag, recent poll and error rates, failing watches
    and circuit breakers per provider, workers."""
    now = time.time()
    rates = metrics.recent_rates(store.recent_cells(metrics.recent_window(now)), now)
    by_provider = store.counts_by_provider()
    names = list(by_provider)
    circuits = store.circuits(names)
    failing = store.failing_counts(names)
    return {
        "counts": store.counts(),
        "providers": {
            name: {
                "counts": counts,
                **NO_RATES,
                **rates.get(name, {}),
                "failing": failing[name],
                "circuit": _circuit(circuits[name]),
            }
            for name, counts in by_provider.items()
        },
        "dispatch_lag_seconds": store.dispatch_lag(now),
        "workers": {
            node: {"last_seen": at, "age_seconds": max(0.0, now - at), "queues": queues}
            for node, (at, queues) in store.workers().items()
        },
    }
