"""The dispatch side of webhooks: final events in, due deliveries out to the senders.

Steps 1 and 2 of the flow drawn in :mod:`taskwarden.webhooks`. :func:`pump` runs on every
dispatch tick: it turns new final events on the events stream into
:class:`~taskwarden.webhooks.Delivery` records, one per target, then claims the due ones a lease
ahead and hands them, in batches, to the ``taskwarden.webhook`` task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from taskwarden import keys, logs
from taskwarden.config import Settings
from taskwarden.lifecycle import FINAL_STATES
from taskwarden.webhooks.sender import GLOBAL, WATCH, Delivery

SendDeliveries = Callable[[Sequence[str]], None]
CONSUMER = "dispatch"  # one consumer name for every dispatcher: pending entries are shared
READ_COUNT = 1000
MAX_BATCHES = 4  # delivery tasks sent per tick

log = logs.get("taskwarden.webhooks")

# KEYS: pending, due. ARGV: now, then (id, record) pairs. Adds each delivery unless it exists.
_ENQUEUE = """
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[i])
    added = added + 1
  end
end
return added
"""

# KEYS: due. ARGV: now, limit, lease_until. Takes due deliveries, pushing them a lease ahead.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id) end
return ids
"""


def ensure_group(client: redis.Redis) -> None:
    """Create the consumer group on the events stream unless it exists. It starts at the end:
    final events from before webhooks were first pumped are not delivered (a warden upgraded
    with a global URL set does not call it for every watch that ever ended)."""
    try:
        client.xgroup_create(keys.EVENTS, keys.WEBHOOKS_GROUP, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _read(client: redis.Redis, start: str) -> list[tuple[str, dict[str, str]]]:
    def read() -> Any:
        return client.xreadgroup(
            keys.WEBHOOKS_GROUP, CONSUMER, {keys.EVENTS: start}, count=READ_COUNT
        )

    try:
        return _entries(read())
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
    ensure_group(client)  # the first tick ever (or the stream was deleted)
    return _entries(read())


def enqueue_final_events(client: redis.Redis, settings: Settings, now: float) -> int:
    """Add a delivery for each new final event that has a target; return how many were added."""
    added = 0
    for pending_first in (True, False):  # entries a crashed pump left unacknowledged, then new
        while True:
            entries = _read(client, "0" if pending_first else ">")
            if not entries:
                break
            added += _enqueue(client, settings, now, entries)
            client.xack(keys.EVENTS, keys.WEBHOOKS_GROUP, *[entry_id for entry_id, _ in entries])
            if pending_first or len(entries) < READ_COUNT:
                break
    return added


def _entries(got: Any) -> list[tuple[str, dict[str, str]]]:
    if not got:
        return []
    streams = got.items() if isinstance(got, dict) else got
    out = []
    for _, entries in streams:
        # a dict answer (RESP3) nests the entries one list deeper
        rows = entries[0] if entries and isinstance(entries[0], list) else entries
        out += [(str(entry_id), dict(fields or {})) for entry_id, fields in rows]
    return out


def _enqueue(
    client: redis.Redis, settings: Settings, now: float, entries: list[tuple[str, dict[str, str]]]
) -> int:
    finals = [(eid, f) for eid, f in entries if f.get("to") in FINAL_STATES and f.get("watch_id")]
    if not finals:
        return 0
    pipe = client.pipeline(transaction=False)
    for _, fields in finals:
        pipe.hget(keys.watch(fields["watch_id"]), "webhook")
    own_urls = pipe.execute()
    args: list[str] = []
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
            args += [delivery.id, delivery.record()]
    if not args:
        return 0
    added: Any = client.eval(_ENQUEUE, 2, keys.WEBHOOKS_PENDING, keys.WEBHOOKS_DUE, now, *args)
    return int(added)


def claim(client: redis.Redis, now: float, limit: int, lease_until: float) -> list[str]:
    """Take up to ``limit`` due deliveries, due again at ``lease_until`` unless recorded."""
    ids: Any = client.eval(_CLAIM, 1, keys.WEBHOOKS_DUE, now, limit, lease_until)
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def lease_seconds(settings: Settings) -> float:
    """How long a claimed delivery is left to its sender before it is due again."""
    return 2 * settings.webhooks.timeout + 30


def pump(client: redis.Redis, settings: Settings, now: float, send: SendDeliveries) -> int:
    """One dispatch tick's webhook work: new final events in, due deliveries out (as batches
    for ``send``); return how many deliveries were sent."""
    added = enqueue_final_events(client, settings, now)
    size = settings.webhooks.batch_size
    ids = claim(client, now, size * MAX_BATCHES, now + lease_seconds(settings))
    for start in range(0, len(ids), size):
        send(ids[start : start + size])
    if added or ids:
        log.info("webhooks.pump", added=added, sent=len(ids))
    return len(ids)
