"""The dispatch side of webhooks: final events in, due deliveries out to the senders.

Steps 1 and 2 of the flow drawn in :mod:`taskwarden.webhooks`. :func:`pump` runs on every
dispatch tick: it turns new final events on the events stream into
:class:`~taskwarden.webhooks.Delivery` records, one per target, then claims the due ones a lease
ahead and hands them, in batches, to the ``taskwarden.webhook`` task. Its records (the events
consumer group, the pending and due deliveries) are kept by :mod:`taskwarden.store.webhooks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from taskwarden import logs
from taskwarden.config import Settings
from taskwarden.lifecycle import FINAL_STATES
from taskwarden.store import Store
from taskwarden.webhooks.sender import GLOBAL, WATCH, Delivery

SendDeliveries = Callable[[Sequence[str]], None]
READ_COUNT = 1000
MAX_BATCHES = 4  # delivery tasks sent per tick

log = logs.get("taskwarden.webhooks")


def enqueue_final_events(store: Store, settings: Settings, now: float) -> int:
    """Add a delivery for each new final event that has a target; return how many were added."""
    added = 0
    for pending_first in (True, False):  # entries a crashed pump left unacknowledged, then new
        while True:
            entries = store.webhook_events(pending=pending_first, count=READ_COUNT)
            if not entries:
                break
            added += _enqueue(store, settings, now, entries)
            store.ack_webhook_events([entry_id for entry_id, _ in entries])
            if pending_first or len(entries) < READ_COUNT:
                break
    return added


def _enqueue(
    store: Store, settings: Settings, now: float, entries: list[tuple[str, dict[str, str]]]
) -> int:
    finals = [(eid, f) for eid, f in entries if f.get("to") in FINAL_STATES and f.get("watch_id")]
    if not finals:
        return 0
    own_urls = store.webhook_urls([fields["watch_id"] for _, fields in finals])
    records: list[tuple[str, str]] = []
    for (event_id, fields), own in zip(finals, own_urls, strict=True):
        targets = ([WATCH] if own else []) + ([GLOBAL] if settings.webhooks.url else [])
        for target in targets:
            delivery = Delivery(
                id=f"{event_id}:{target}",
                event_id=event_id,
                watch_id=fields["watch_id"],
                target=target,
                from_state=fields.get("from", ""),
                to_state=fields["to"],
                at=float(fields.get("at") or now),
            )
            records.append((delivery.id, delivery.record()))
    return store.add_deliveries(now, records)


def lease_seconds(settings: Settings) -> float:
    """How long a claimed delivery is left to its sender before it is due again."""
    return 2 * settings.webhooks.timeout + 30


def pump(store: Store, settings: Settings, now: float, send: SendDeliveries) -> int:
    """One dispatch tick's webhook work: new final events in, due deliveries out (as batches
    for ``send``); return how many deliveries were sent."""
    added = enqueue_final_events(store, settings, now)
    size = settings.webhooks.batch_size
    ids = store.claim_deliveries(now, size * MAX_BATCHES, now + lease_seconds(settings))
    for start in range(0, len(ids), size):
        send(ids[start : start + size])
    if added or ids:
        log.info("webhooks.pump", added=added, sent=len(ids))
    return len(ids)
