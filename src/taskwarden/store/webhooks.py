"""The webhook outbox's records, kept beside the watches (names in :mod:`taskwarden.keys`):

- the ``taskwarden-webhooks`` consumer group on the ``events`` stream: which transitions the
  dispatch pump has already turned into deliveries (an entry read but not acknowledged stays
  pending in the group, so a pump that crashed is read again by the next one);
- ``webhooks:pending`` hash: delivery id -> its record (JSON, the shape is
  :class:`taskwarden.webhooks.sender.Delivery`'s), while it is to be sent;
- ``webhooks:due`` sorted set: delivery id -> when to (re)try it.

:class:`StoreWebhooks` is mixed into :class:`~taskwarden.store.Store`; the store holds records
as strings and leaves what they mean to :mod:`taskwarden.webhooks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from redis import Redis, ResponseError
from redis.commands.core import Script

from taskwarden import keys
from taskwarden.lifecycle import State
from taskwarden.models import encode, history_entry

CONSUMER = "dispatch"  # one consumer name for every dispatcher: pending entries are shared

Entries = list[tuple[str, dict[str, str]]]


class StoreWebhooks:
    """The events consumer group and the delivery records; a mixin of
    :class:`~taskwarden.store.Store`, which provides ``redis``, ``history_limit`` and the
    registered scripts."""

    redis: Redis
    history_limit: int
    _webhook_enqueue: Script
    _webhook_claim: Script
    _webhook_record: Script

    # the events consumer group

    def ensure_webhook_group(self) -> None:
        """Create the consumer group on the events stream unless it exists. It starts at the end:
        final events from before webhooks were first pumped are not delivered (a warden upgraded
        with a global URL set does not call it for every watch that ever ended)."""
        try:
            self.redis.xgroup_create(keys.EVENTS, keys.WEBHOOKS_GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def webhook_events(self, *, pending: bool, count: int) -> Entries:
        """Up to ``count`` transitions for the webhook pump, oldest first: those it read before
        and did not acknowledge (``pending``), or new ones. Creates the group on first use."""
        start = "0" if pending else ">"

        def read() -> Any:
            return self.redis.xreadgroup(
                keys.WEBHOOKS_GROUP, CONSUMER, {keys.EVENTS: start}, count=count
            )

        try:
            return _entries(read())
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        self.ensure_webhook_group()  # the first tick ever (or the stream was deleted)
        return _entries(read())

    def ack_webhook_events(self, event_ids: Sequence[str]) -> None:
        """The pump has made the deliveries of these transitions: do not read them again."""
        if event_ids:
            self.redis.xack(keys.EVENTS, keys.WEBHOOKS_GROUP, *event_ids)

    def webhook_urls(self, watch_ids: Sequence[str]) -> list[str | None]:
        """Each watch's own webhook URL ('' or None when it has none), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for wid in watch_ids:
            pipe.hget(keys.watch(wid), "webhook")
        return cast(list[str | None], pipe.execute())

    # deliveries

    def add_deliveries(self, now: float, records: Iterable[tuple[str, str]]) -> int:
        """Add each ``(delivery id, record)``, due at ``now``, unless that id is already there
        (a replayed event adds nothing twice); return how many were added."""
        args: list[str] = []
        for delivery_id, record in records:
            args += [delivery_id, record]
        if not args:
            return 0
        added = self._webhook_enqueue(
            keys=[keys.WEBHOOKS_PENDING, keys.WEBHOOKS_DUE], args=[now, *args]
        )
        return int(added)

    def claim_deliveries(self, now: float, limit: int, lease_until: float) -> list[str]:
        """Take up to ``limit`` due deliveries, due again at ``lease_until`` unless recorded
        before (so a lost sender's deliveries are retried)."""
        ids = self._webhook_claim(keys=[keys.WEBHOOKS_DUE], args=[now, limit, lease_until])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def deliveries(self, delivery_ids: Sequence[str]) -> list[str | None]:
        """The record of each delivery, None for one no longer pending."""
        if not delivery_ids:
            return []
        return cast(list[str | None], self.redis.hmget(keys.WEBHOOKS_PENDING, list(delivery_ids)))

    def record_delivery(
        self,
        delivery_id: str,
        record: str,
        watch_id: str,
        *,
        next_at: float | None,
        on_watch: bool,
        status: str,
        error: str | None,
        attempts: int,
        now: float,
        state: State | None,
        note: str,
    ) -> bool:
        """Write the outcome of one attempt, in one step: the delivery is due again at
        ``next_at`` with its new ``record``, or (None) done and dropped; the watch, if it still
        exists, gets ``note`` in its history (``state``: the one the sender saw) and, when
        ``on_watch``, the ``webhook_status``, ``webhook_error`` and ``webhook_attempts`` fields.
        False when the delivery was no longer pending (nothing is written)."""
        done = self._webhook_record(
            keys=[
                keys.WEBHOOKS_PENDING,
                keys.WEBHOOKS_DUE,
                keys.watch(watch_id),
                keys.history(watch_id),
            ],
            args=[
                delivery_id,
                "" if next_at is None else repr(next_at),
                record,
                "1" if on_watch else "0",
                status,
                encode(error),
                attempts,
                history_entry(now, state, state, None, note),  # type: ignore[arg-type]
                self.history_limit,
            ],
        )
        return bool(done)


def _entries(got: Any) -> Entries:
    if not got:
        return []
    streams = got.items() if isinstance(got, dict) else got
    out = []
    for _, entries in streams:
        # a dict answer (RESP3) nests the entries one list deeper
        rows = entries[0] if entries and isinstance(entries[0], list) else entries
        out += [(str(entry_id), dict(fields or {})) for entry_id, fields in rows]
    return out
