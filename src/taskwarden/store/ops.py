"""The store's operational records, kept beside the watches: who is alive, what was refused,
and which index layout the stored watches were brought up to.

- ``heartbeat:<component>`` and ``heartbeat:worker:<node>`` strings, each living for its TTL,
  with ``heartbeat:queues:<node>`` beside the latter (names in :mod:`taskwarden.keys`), and
  the ``heartbeat:workers`` sorted set (node -> last heartbeat): the live nodes are found
  there, never by scanning keys, and a node whose heartbeat key expired is dropped from it
  when read (and, past twice its TTL, when any node beats).
- ``deadletters`` stream: refused input, capped, written by :func:`dead_letter` (the broker
  transport calls it with its own client) or :meth:`StoreOps.dead_letter`, which also count it
  in the ``metrics`` hash.
- ``schema``: the index layout version, for :meth:`StoreOps.backfill_indexes`.

:class:`StoreOps` is mixed into :class:`~taskwarden.store.Store`, so callers keep calling
``store.heartbeat(...)``, ``store.dead_letters()``... on the one store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script

from taskwarden import keys, metrics
from taskwarden.lifecycle import FINAL_STATES

MAX_DEADLETTERS = 10_000
MAX_DEAD_BODY = 4096  # bytes of a refused message kept: enough to see what was wrong
# 1: the ``updated`` and ``label:<pair>`` indexes hold every watch; 2: ``finished`` holds every
# final watch
SCHEMA_VERSION = 2
BACKFILL_BATCH = 500  # watches read per round trip by a backfill
MAX_WORKERS = 10_000  # worker nodes read at most (the most recent heartbeats)


def dead_letter(
    client: Redis | Pipeline, now: float, source: str, reason: str, body: object
) -> None:
    """Append to the dead-letter stream (:meth:`StoreOps.dead_letter`; the broker transport
    writes with its own client). The body is kept as JSON, or failing that as its repr."""
    try:
        text = json.dumps(body, default=repr)
    except (TypeError, ValueError):
        text = repr(body)
    client.xadd(
        keys.DEADLETTERS,
        {"at": now, "source": source, "reason": reason[:2000], "body": text[:MAX_DEAD_BODY]},
        maxlen=MAX_DEADLETTERS,
        approximate=True,
    )
    # the counter a scrape reports (the stream is capped; the count goes on). ``client`` may be
    # the caller's pipeline (MULTI), which then holds both writes
    client.hincrby(keys.METRICS, metrics.dead_letter_field(source), 1)


@dataclass(frozen=True)
class Backfill:
    """What :meth:`StoreOps.backfill_indexes` did: whether it scanned, and what it found."""

    ran: bool
    watches: int = 0  # watches examined
    added: int = 0  # index entries that were missing and are now there


class StoreOps:
    """Heartbeats, dead letters and the index backfill; a mixin of
    :class:`~taskwarden.store.Store`, which provides ``redis``."""

    redis: Redis
    retention: dict[str, float]
    _workers: Script

    # liveness

    def heartbeat(self, component: str, now: float, ttl: float) -> None:
        self.redis.set(keys.HEARTBEAT + component, now, px=int(ttl * 1000))

    def last_heartbeat(self, component: str) -> float | None:
        value = cast(str | None, self.redis.get(keys.HEARTBEAT + component))
        return float(value) if value else None

    def worker_heartbeat(
        self, node: str, now: float, ttl: float, queues: Iterable[str] | None = None
    ) -> None:
        """Say worker ``node`` is alive for ``ttl`` seconds and, when given, which queues it
        consumes (in a key of its own: a reader from before queues were reported still reads
        the heartbeat as a bare time). The node goes in the workers registry, from which the
        nodes silent for twice ``ttl`` are pruned."""
        px = int(ttl * 1000)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.worker_key(node), now, px=px)
        if queues is not None:
            pipe.set(keys.WORKER_QUEUES + node, json.dumps(sorted(queues)), px=px)
        pipe.zadd(keys.WORKERS, {node: now})
        pipe.zremrangebyscore(keys.WORKERS, "-inf", f"({now - 2 * ttl!r}")
        pipe.execute()

    def forget_worker(self, node: str) -> None:
        """A worker node stopped: drop its heartbeat rather than wait for the TTL."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.worker_key(node), keys.WORKER_QUEUES + node)
        pipe.zrem(keys.WORKERS, node)
        pipe.execute()

    @staticmethod
    def worker_key(node: str) -> str:
        return keys.WORKER_HEARTBEAT + node

    def workers(self) -> dict[str, tuple[float, list[str] | None]]:
        """Each live Celery worker node (its heartbeat key has not expired): its last
        heartbeat and the queues it consumes (None for a node that does not say, a worker of a
        taskwarden from before workers reported their queues). One round trip, whatever the
        number of keys in Redis; at most :data:`MAX_WORKERS` nodes, the most recent."""
        rows = cast(list[str], self._workers(
            keys=[keys.WORKERS], args=[keys.WORKER_HEARTBEAT, keys.WORKER_QUEUES, MAX_WORKERS]
        ))  # fmt: skip
        found = {
            rows[i]: (float(rows[i + 1]), json.loads(rows[i + 2]) if rows[i + 2] else None)
            for i in range(0, len(rows), 3)
        }
        return dict(sorted(found.items()))

    def worker_heartbeats(self) -> dict[str, float]:
        """Last heartbeat of each Celery worker node still alive (see :meth:`workers`)."""
        return {node: at for node, (at, _) in self.workers().items()}

    def worker_queues(self) -> dict[str, list[str] | None]:
        """The queues each live Celery worker node consumes (see :meth:`workers`)."""
        return {node: queues for node, (_, queues) in self.workers().items()}

    # refused input

    def dead_letter(self, now: float, source: str, reason: str, body: object) -> None:
        """Keep a refused registration for `taskwarden deadletters` (capped, oldest go first)."""
        dead_letter(self.redis, now, source, reason, body)

    def dead_letter_many(
        self, now: float, source: str, refused: Sequence[tuple[str, object]]
    ) -> None:
        """Keep each (reason, body) of ``refused`` as :meth:`dead_letter` does, in one trip."""
        if not refused:
            return
        pipe = self.redis.pipeline(transaction=False)
        for reason, body in refused:
            dead_letter(pipe, now, source, reason, body)
        pipe.execute()

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Refused registrations, newest first."""
        entries: list[tuple[str, dict[str, str]]] = self.redis.xrevrange(  # type: ignore[assignment]
            keys.DEADLETTERS, count=limit
        )
        return [
            {"id": entry_id, **fields, "at": float(fields["at"])} for entry_id, fields in entries
        ]

    # upgrades

    def backfill_indexes(self, batch: int = BACKFILL_BATCH) -> Backfill:
        """Index the watches an older taskwarden wrote, once: it kept no ``updated`` or
        ``label:<pair>`` entries, so listings by label or by updated time missed its watches.

        Nor did it keep the ``finished`` index, so its final watches would never be removed:
        they are scored there by when they entered their state plus that state's retention
        (read from the ``state:<final>`` sets, ``batch`` at a time; no SCAN).

        Unless the schema key says it is done, scan every watch (SCAN, ``batch`` at a time)
        and add the entries it lacks (ZADD NX: an entry a live write made is never set back
        to an older time); then record the version. Every step is idempotent, so two
        processes starting at once, or a crash halfway, only repeat work.
        """
        raw = cast(str | None, self.redis.get(keys.SCHEMA))
        done = int(raw) if raw is not None else 0
        if done >= SCHEMA_VERSION:
            return Backfill(ran=False)
        watches = added = 0
        if done < 1:
            found = self.redis.scan_iter(keys.WATCH + "*", count=batch, _type="hash")
            while chunk := list(islice(found, batch)):
                watches += len(chunk)
                added += self._backfill_chunk(chunk)
        seen, indexed = self._backfill_finished(batch)
        self.redis.set(keys.SCHEMA, SCHEMA_VERSION)
        examined = watches if done < 1 else seen  # a scan examined the final watches too
        return Backfill(ran=True, watches=examined, added=added + indexed)

    def _backfill_finished(self, batch: int) -> tuple[int, int]:
        seen = added = 0
        for state in sorted(FINAL_STATES):
            keep = self.retention[str(state)]
            start = 0
            while rows := cast(
                list[tuple[str, float]],
                self.redis.zrange(keys.by_state(state), start, start + batch - 1, withscores=True),
            ):
                start += len(rows)
                seen += len(rows)
                entries = {wid: at + keep for wid, at in rows}
                added += int(cast(int, self.redis.zadd(keys.FINISHED, entries, nx=True)))
        return seen, added

    def _backfill_chunk(self, names: list[str]) -> int:
        fields = ("created_at", "updated_at", "labels")
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, fields)
        rows: list[list[str | None]] = pipe.execute()
        for name, (created, updated, labels) in zip(names, rows, strict=True):
            wid = name[len(keys.WATCH) :]
            if updated:
                pipe.zadd(keys.UPDATED, {wid: float(updated)}, nx=True)
            if created and labels:
                for key, value in json.loads(labels).items():
                    pipe.zadd(keys.label(key, value), {wid: float(created)}, nx=True)
        return sum(int(n) for n in pipe.execute())
