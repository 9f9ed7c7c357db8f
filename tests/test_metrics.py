"""Prometheus metrics: totals over every worker process, read back through the real parser."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskwarden import keys, metrics
from taskwarden.api import create_app
from taskwarden.config.settings import load_settings
from taskwarden.lifecycle import Decision, State
from taskwarden.models import Registration, Watch, watch_id
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store import Commit, Store

from .conftest import running_warden, wait_for
from .test_api import serve

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(store: Store, now: float | None = None) -> tuple[Samples, str]:
    """What ``GET /metrics`` serves, parsed: the exposition of what the store reads."""
    live = store.live_figures(time.time() if now is None else now)
    body, content_type = metrics.exposition(store.metric_cells(), live)
    return parse(body.decode()), content_type


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def recent_rates(store: Store, now: float, window_s: float = 60) -> dict[str, dict[str, float]]:
    """What ``/v1/stats`` reports as each provider's recent rates."""
    return metrics.recent_rates(store.recent_cells(metrics.recent_window(now, window_s)), now)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def test_exposition_sums_every_process(tmp_path: Path, sim: SimulatorServer) -> None:
    """Two poll and two archive processes, a rate limit, platform errors: the scrape reports
    the totals the watches themselves show (polls, archive bytes, states, HTTP errors)."""
    good = sim.geobox.add_tasks([{"running_seconds": 0.5, "file_size": 3000} for _ in range(4)])
    flaky = sim.geobox.add_task(running_seconds=0.5, file_size=10)
    sim.inject(kind="status", status=503, task=flaky.uuid, route="tasks/{uuid}/", count=2)
    missing = str(uuid.uuid4())
    limits = {
        "TASKWARDEN_RATE_LIMITS__GEOBOX__RATE": "8",
        "TASKWARDEN_RATE_LIMITS__GEOBOX__BURST": "1",
    }
    with running_warden(tmp_path, sim, processes=2, **limits) as w:
        for task in [*good, flaky]:
            w.send_track(provider="geobox", remote_id=task.uuid)
        w.send_track(provider="geobox", remote_id=missing)
        ids = [watch_id("geobox", t.uuid) for t in [*good, flaky]]
        finals = [w.wait_final(wid, timeout=60) for wid in ids]
        assert all(f.state is State.SUCCEEDED for f in finals)
        assert w.wait_final(watch_id("geobox", missing), timeout=60).state is State.ERROR

        watches = [w.store.get(wid) for wid in [*ids, watch_id("geobox", missing)]]
        polls = sum(x.polls for x in watches if x is not None)
        archived = sum(o["size"] for f in finals for o in f.outputs)

        def settled() -> Samples | None:
            # the counters are flushed just after each commit: wait for the last flush
            samples, _ = scrape(w.store)
            done = total(samples, "taskwarden_polls_total") == polls
            done = done and total(samples, "taskwarden_archives_total") == len(finals)
            return samples if done else None

        samples = wait_for(settled, timeout=30)
        _, content_type = scrape(w.store)
        rates = recent_rates(w.store, time.time())

    assert content_type.startswith("text/plain")
    ok = total(samples, "taskwarden_polls_total", provider="geobox", outcome="ok")
    assert 0 < ok < polls  # the 503s and the 404 were polls that did not succeed
    assert total(samples, "taskwarden_poll_duration_seconds_count", provider="geobox") == polls
    assert total(samples, "taskwarden_poll_duration_seconds_bucket", le="+Inf") == polls
    assert total(samples, "taskwarden_poll_duration_seconds_sum") > 0
    assert total(samples, "taskwarden_http_errors_total", provider="geobox", status="503") == 2
    assert total(samples, "taskwarden_http_errors_total", provider="geobox", status="404") == 1
    assert total(samples, "taskwarden_archive_bytes_total", provider="geobox") == archived
    assert archived >= 4 * 3000
    assert total(samples, "taskwarden_archive_duration_seconds_count") == len(finals)
    assert total(samples, "taskwarden_archives_total", outcome="succeeded") == len(finals)
    assert total(samples, "taskwarden_watches", state="succeeded") == 5
    assert total(samples, "taskwarden_watches", state="error") == 1
    assert total(samples, "taskwarden_watches", state="running") == 0
    assert total(samples, "taskwarden_rate_limit_waits_total", provider="geobox") > 0
    assert total(samples, "taskwarden_rate_limit_wait_seconds_total", provider="geobox") > 0
    assert ("taskwarden_dispatch_lag_seconds", ()) in samples
    assert rates["geobox"]["polls_per_s"] > 0
    assert rates["geobox"]["errors_per_s"] > 0
    assert rates["geobox"]["rate_limit_waits_per_s"] > 0


def test_dispatch_lag_is_the_oldest_overdue_watch(store: Store) -> None:
    """The lag gauge is how long the longest-waiting due watch has waited, over providers."""
    store.redis.sadd("taskwarden:providers", "a", "b")
    store.redis.zadd("taskwarden:due:a", {"w1": 100.0, "w2": 500.0})
    store.redis.zadd("taskwarden:due:b", {"w3": 90.0})
    assert scrape(store, now=200.0)[0][("taskwarden_dispatch_lag_seconds", ())] == 110.0
    assert scrape(store, now=80.0)[0][("taskwarden_dispatch_lag_seconds", ())] == 0.0
    samples, _ = scrape(store)  # a scrape of an idle warden has every family, at zero
    assert total(samples, "taskwarden_polls_total") == 0
    assert total(samples, "taskwarden_watches", state="pending") == 0


def test_recent_rates_cover_the_window(store: Store) -> None:
    """Rates are counts over the seconds the recent buckets cover; older buckets drop out."""
    now = 10_000.0  # a bucket boundary
    old, recent = metrics.Batch(), metrics.Batch()
    for _ in range(50):
        old.poll("p", "ok", 0.01)
    for _ in range(30):
        recent.poll("p", "retryable_error", 0.01)
    store.add_metrics(old, now=now - 120)
    store.add_metrics(recent, now=now - 5)
    rates = recent_rates(store, now, window_s=60)
    # six 10-second buckets (the current one included) cover 50 s before `now`
    assert rates == {"p": {"polls_per_s": 0.6, "errors_per_s": 0.6, "rate_limit_waits_per_s": 0.0}}


@pytest.mark.parametrize(
    ("window_s", "first"),
    [(60, 9950), (1, 10_000), (15, 9990), (10_000, 9840)],  # at least one, at most 17 buckets
)
def test_the_recent_window_is_whole_buckets(window_s: float, first: int) -> None:
    """The window's buckets end with the current one and cover ``window_s``, within bounds."""
    window = metrics.recent_window(10_004.0, window_s)
    assert (window.start, window[-1], window.step) == (first, 10_000, metrics.RECENT_BUCKET)


def test_a_batch_drains_into_cells_once() -> None:
    """Draining folds the checks into counters, histogram cells and recent rates, and leaves
    the batch empty, so the next flush adds nothing twice."""
    batch = metrics.Batch()
    batch.poll("p", "ok", 0.02)
    batch.poll("p", "permanent_error", 7.0)
    batch.webhook("delivered")
    cells = batch.drain()
    assert cells.ints == {
        "polls|p|ok": 1,
        "polls|p|permanent_error": 1,
        "poll_duration_seconds|p|2": 1,  # 0.01 < 0.02 <= 0.025
        "poll_duration_seconds|p|10": 1,  # 5 < 7 <= 10
        "webhook_deliveries|delivered": 1,
    }
    assert cells.floats == {"poll_duration_seconds|p|sum": 7.02}
    assert cells.recent == {"p|polls": 2, "p|errors": 1}
    assert not batch.drain()


def _watch(store: Store, provider: str, remote_id: str, now: float) -> Watch:
    watch, _ = store.register(Registration(provider=provider, remote_id=remote_id), now)
    return watch


def _check(store: Store, watch: Watch, state: State, now: float, *, errors: int = 0) -> None:
    """Commit one check of ``watch`` as a poll would: it leads to ``state``, after ``errors``
    failed checks in a row (0: this one succeeded)."""
    store.redis.zadd(keys.due(watch.provider), {watch.id: 0})
    claim = next(
        c for c in store.claim_due(watch.provider, now, 1000, now + 60) if c.watch_id == watch.id
    )
    decision = Decision(state, state.upper(), None, 1.0, errors, None if state.final else now + 600,
                        last_error="boom" if errors else None,
                        failing_since=now - 30 if errors else None)  # fmt: skip
    current = store.get(watch.id)
    assert current is not None
    assert store.commit(Commit(claim, decision, now, previous=current.state))


def test_metrics_serves_what_an_operator_alerts_on(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    """``GET /metrics`` on a real Redis: watches by provider and state, messages per queue
    (every priority), live workers per queue (an expired one not counted), dead letters
    (counted and stored), each provider's oldest running watch, the failing watches (a
    success and a cancel take them out) and the webhook backlog."""
    now = time.time()
    old = _watch(store, "geobox", "old", now - 500)
    young = _watch(store, "geobox", "young", now - 400)
    flaky = _watch(store, "geobox", "flaky", now - 300)
    other = _watch(store, "up42", "u", now - 200)
    _watch(store, "up42", "waiting", now - 100)
    _check(store, old, State.RUNNING, now - 300)
    _check(store, young, State.RUNNING, now - 60)
    _check(store, flaky, State.PENDING, now - 50, errors=2)
    _check(store, other, State.RUNNING, now - 120, errors=1)
    store.redis.lpush(keys.QUEUE_POLL, "a", "b")
    store.redis.lpush(keys.broker_lists(keys.QUEUE_POLL)[1], "c")
    store.redis.lpush(keys.QUEUE_ARCHIVE, "d")
    store.worker_heartbeat("poll@h", now, ttl=30, queues=list(keys.POLL_QUEUES))
    store.worker_heartbeat("gone@h", now - 100, ttl=30, queues=[keys.QUEUE_ARCHIVE])
    store.redis.delete(keys.WORKER_HEARTBEAT + "gone@h")  # as if its TTL ran out: not live
    for reason in ("not json", "unknown task"):
        store.dead_letter(now, "queue", reason, {"x": 1})
    store.add_deliveries(now, [("d1", "{}"), ("d2", "{}"), ("d3", "{}")])

    settings = load_settings(data_dir=tmp_path, archive_url=(tmp_path / "a").as_uri(),
                             api={"token": "t" * 24})  # fmt: skip
    with serve(create_app(settings, redis_url)) as client:

        def get() -> Samples:
            r = client.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            return parse(r.text)

        samples = get()
        _assert_first_scrape(samples)
        _check(store, flaky, State.RUNNING, now - 10)  # its checks succeed again
        store.cancel(other.id, now)
        samples = get()
    assert total(samples, "taskwarden_watches_failing") == 0
    assert total(samples, "taskwarden_oldest_running_seconds", provider="up42") == 0
    assert total(samples, "taskwarden_watches", provider="up42", state="cancelled") == 1


def _assert_first_scrape(samples: Samples) -> None:
    assert total(samples, "taskwarden_watches", provider="geobox", state="running") == 2
    assert total(samples, "taskwarden_watches", provider="geobox", state="pending") == 1
    assert total(samples, "taskwarden_watches", provider="up42", state="running") == 1
    assert total(samples, "taskwarden_watches", provider="up42", state="pending") == 1
    assert total(samples, "taskwarden_queue_messages", queue=keys.QUEUE_POLL) == 3
    assert total(samples, "taskwarden_queue_messages", queue=keys.QUEUE_ARCHIVE) == 1
    assert total(samples, "taskwarden_queue_messages", queue=keys.QUEUE_DEFAULT) == 0
    for queue in keys.POLL_QUEUES:
        assert total(samples, "taskwarden_workers", queue=queue) == 1
    assert ("taskwarden_workers", (("queue", keys.QUEUE_ARCHIVE),)) in samples
    assert total(samples, "taskwarden_workers", queue=keys.QUEUE_ARCHIVE) == 0
    assert total(samples, "taskwarden_dead_letters_total", source="queue") == 2
    assert total(samples, "taskwarden_dead_letters_stored") == 2
    geobox = total(samples, "taskwarden_oldest_running_seconds", provider="geobox")
    up42 = total(samples, "taskwarden_oldest_running_seconds", provider="up42")
    assert 300 <= geobox < 400 and 120 <= up42 < 220  # since they entered running
    assert total(samples, "taskwarden_watches_failing", provider="geobox") == 1
    assert total(samples, "taskwarden_watches_failing", provider="up42") == 1
    assert total(samples, "taskwarden_webhook_backlog") == 3


def test_a_failing_watch_leaves_the_index_when_it_ends_or_goes(store: Store) -> None:
    """A watch that gives up (error) or is forgotten while failing is no longer counted."""
    now = time.time()
    a, b = _watch(store, "geobox", "a", now), _watch(store, "geobox", "b", now)
    _check(store, a, State.RUNNING, now, errors=1)
    _check(store, b, State.RUNNING, now, errors=1)
    assert store.live_figures(now).failing == {"geobox": 2}
    _check(store, a, State.ERROR, now, errors=2)
    assert store.forget(b.id, force=True).removed
    assert store.live_figures(now).failing == {"geobox": 0}
    assert store.redis.exists(keys.failing("geobox")) == 0
