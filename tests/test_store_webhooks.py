"""The store's webhook outbox on a real Redis: the events consumer group and the delivery
records (what :mod:`taskwarden.webhooks` keeps, read and written only through the store)."""

from __future__ import annotations

from taskwarden import keys
from taskwarden.lifecycle import State
from taskwarden.models import Registration
from taskwarden.store import Store

NOW = 1_700_000_000.0


def register(store: Store, remote_id: str, webhook: str | None = None) -> str:
    reg = Registration(provider="geobox", remote_id=remote_id, webhook=webhook)
    return store.register(reg, NOW)[0].id


def test_the_group_starts_at_the_end_and_keeps_unacknowledged_entries(store: Store) -> None:
    """The first read creates the group after every existing event; an entry read and not
    acknowledged is read again as pending, and no more once acknowledged."""
    register(store, "before")
    assert store.webhook_events(pending=False, count=10) == []  # creates the group
    wid = register(store, "after")
    new = store.webhook_events(pending=False, count=10)
    assert [fields["watch_id"] for _, fields in new] == [wid]
    assert new[0][1]["to"] == "pending"
    assert store.webhook_events(pending=False, count=10) == []  # delivered to the group once
    assert store.webhook_events(pending=True, count=10) == new  # a crashed pump's leftovers
    store.ack_webhook_events([entry_id for entry_id, _ in new])
    assert store.webhook_events(pending=True, count=10) == []
    store.ensure_webhook_group()  # again: harmless


def test_webhook_urls_read_each_watchs_own(store: Store) -> None:
    """The pump learns each watch's own URL, and that a watch has none."""
    own = register(store, "own", webhook="https://example.com/hook")
    plain = register(store, "plain")
    assert store.webhook_urls([own, plain, "missing"]) == ["https://example.com/hook", "", None]


def test_deliveries_are_added_once_and_claimed_under_a_lease(store: Store) -> None:
    """A delivery id is added once however often its event is replayed; a claim pushes it a
    lease ahead, so it comes back only when the lease is over."""
    assert store.add_deliveries(NOW, [("1-0:watch", '{"a":1}'), ("1-0:global", '{"b":2}')]) == 2
    assert store.add_deliveries(NOW + 5, [("1-0:watch", '{"replayed":1}')]) == 0
    assert store.add_deliveries(NOW, []) == 0
    assert store.deliveries(["1-0:watch", "nope"]) == ['{"a":1}', None]
    assert sorted(store.claim_deliveries(NOW, 10, lease_until=NOW + 60)) == [
        "1-0:global",
        "1-0:watch",
    ]
    assert store.claim_deliveries(NOW + 59, 10, lease_until=NOW + 120) == []
    assert len(store.claim_deliveries(NOW + 60, 1, lease_until=NOW + 120)) == 1  # the limit


def test_an_outcome_is_written_with_the_watchs_fields_and_history(store: Store) -> None:
    """A retry keeps the delivery with its new record and due time and shows on the watch;
    the final outcome drops it; a delivery no longer pending writes nothing."""
    wid = register(store, "t", webhook="https://example.com/hook")
    store.add_deliveries(NOW, [("1-0:watch", "{}")])
    retry = dict(on_watch=True, now=NOW, state=State.PENDING)
    assert store.record_delivery(
        "1-0:watch", '{"attempts":1}', wid, next_at=NOW + 2.5, status="retrying",
        error="answered 500", attempts=1, note="webhook attempt 1 failed", **retry,
    )  # fmt: skip
    assert store.deliveries(["1-0:watch"]) == ['{"attempts":1}']
    assert store.redis.zscore(keys.WEBHOOKS_DUE, "1-0:watch") == NOW + 2.5
    watch = store.get(wid)
    assert watch is not None
    assert (watch.webhook_status, watch.webhook_error, watch.webhook_attempts) == (
        "retrying",
        "answered 500",
        1,
    )
    assert store.record_delivery(
        "1-0:watch", "{}", wid, next_at=None, status="delivered", error=None, attempts=2,
        note="webhook delivered (attempt 2)", **retry,
    )  # fmt: skip
    assert store.deliveries(["1-0:watch"]) == [None]
    assert store.redis.zcard(keys.WEBHOOKS_DUE) == 0
    watch = store.get(wid)
    assert watch is not None
    assert (watch.webhook_status, watch.webhook_error, watch.webhook_attempts) == (
        "delivered",
        None,
        2,
    )
    assert store.history(wid)[-1] == {
        "at": NOW,
        "from": "pending",
        "to": "pending",
        "raw": None,
        "note": "webhook delivered (attempt 2)",
    }
    assert not store.record_delivery(
        "1-0:watch", "{}", wid, next_at=None, status="delivered", error=None, attempts=3,
        note="a second sender", **retry,
    )  # fmt: skip
    assert len(store.history(wid)) == 3  # registered and the two outcomes


def test_a_global_delivery_leaves_the_watchs_fields_alone(store: Store) -> None:
    """``on_watch`` false (the global URL of a watch that has its own): history only; and a
    watch that no longer exists gets nothing, while its delivery is still settled."""
    wid = register(store, "t", webhook="https://example.com/hook")
    store.add_deliveries(NOW, [("1-0:global", "{}"), ("2-0:global", "{}")])
    assert store.record_delivery(
        "1-0:global", "{}", wid, next_at=None, on_watch=False, status="delivered", error=None,
        attempts=1, now=NOW, state=State.PENDING, note="global webhook delivered (attempt 1)",
    )  # fmt: skip
    watch = store.get(wid)
    assert watch is not None
    assert (watch.webhook_status, watch.webhook_attempts) == (None, 0)
    assert store.history(wid)[-1]["note"] == "global webhook delivered (attempt 1)"
    assert store.record_delivery(
        "2-0:global", "{}", "wgone", next_at=None, on_watch=True, status="failed",
        error="the watch no longer exists", attempts=1, now=NOW, state=None, note="failed",
    )  # fmt: skip
    assert store.redis.exists(keys.watch("wgone"), keys.history("wgone")) == 0
    assert store.deliveries(["2-0:global"]) == [None]
