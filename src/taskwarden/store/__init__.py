"""The Redis store: the only reader and writer of taskwarden's records in Redis.

:class:`Store` (:mod:`.watches`) holds the watch records, the due-time index, leases and
history; :mod:`.ops` its operational records (heartbeats, dead letters, the index backfill);
:mod:`.events` the transitions stream, read (:class:`EventFollower` follows it from asyncio);
:mod:`.webhooks` the webhook outbox (the events consumer group, the delivery records);
:mod:`.metrics` the metric cells and live figures (counts, dispatch lag);
:mod:`.queries` the listing; :mod:`.scripts` every Lua script; :mod:`.ratelimit` the
cluster-wide rate limiter, which lives in the same Redis.
"""

from taskwarden.store.errors import UNREACHABLE, StoreError, StoreRefused, StoreUnreachable
from taskwarden.store.events import EventFollower
from taskwarden.store.ops import Backfill, dead_letter
from taskwarden.store.queries import SORTS, BadQuery, Query
from taskwarden.store.ratelimit import Limit, RateLimiter
from taskwarden.store.watches import Claim, Commit, NotRearmable, Store

__all__ = [
    "SORTS",
    "UNREACHABLE",
    "Backfill",
    "BadQuery",
    "Claim",
    "Commit",
    "EventFollower",
    "Limit",
    "NotRearmable",
    "Query",
    "RateLimiter",
    "Store",
    "StoreError",
    "StoreRefused",
    "StoreUnreachable",
    "dead_letter",
]
