"""The Redis store: watch records, the due-time index, leases with fencing, and history.

Layout (names in :mod:`taskwarden.keys`):

- ``watch:<id>`` hash, one per watch; ``history:<id>`` list, newest first, bounded.
- ``due:<provider>`` sorted set scored by the next check time: the only schedule there is.
- ``leases`` sorted set scored by lease expiry. Claiming a due watch moves it from ``due`` to
  ``leases`` and bumps its ``fence``; only a commit carrying the current fence is applied, so a
  poll or archive that was lost, duplicated or overtaken can never write. An expired lease goes
  back to ``due`` (and bumps the fence again) so a lost job is dispatched anew.
- ``watches``, ``provider:<name>``, ``label:<pair>`` (by created at), ``updated`` (by updated
  at) and ``state:<state>`` (by when the state was entered) sorted sets, for listing
  (:mod:`taskwarden.store.queries`); ``counts:<provider>`` hashes, state -> n.
- ``events`` stream: one entry per state transition, written by the same script as the change
  (read through :mod:`taskwarden.store.events`), capped at ``max_events`` entries (about).
- ``finished`` sorted set: every final watch, scored by when the retention sweep may remove
  it (:mod:`taskwarden.store.retention`).
- Heartbeats, the dead-letter stream and the ``schema`` key the index backfill records:
  :mod:`taskwarden.store.ops`, whose :class:`~taskwarden.store.ops.StoreOps` the store mixes in.
- The webhook outbox (the events consumer group, pending and due deliveries):
  :mod:`taskwarden.store.webhooks`; the metric cells and the live figures (counts, dispatch
  lag): :mod:`taskwarden.store.metrics`; the providers' circuit breakers and the
  ``failing:<provider>`` index of watches whose checks fail: :mod:`taskwarden.store.circuits`;
  all mixed in the same way.

Every multi-key change is one Lua script (:mod:`taskwarden.store.scripts`), so a crash between
two writes cannot tear a watch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis

from taskwarden import keys
from taskwarden.lifecycle import FINAL_STATES, Decision, State
from taskwarden.models import FIELDS, Registration, Watch, encode, history_entry, watch_id
from taskwarden.store import connection, scripts
from taskwarden.store.circuits import StoreCircuits
from taskwarden.store.events import StoreEvents
from taskwarden.store.metrics import StoreMetrics
from taskwarden.store.ops import StoreOps
from taskwarden.store.queries import Query, decode_cursor, encode_cursor, list_page
from taskwarden.store.retention import StoreRetention
from taskwarden.store.webhooks import StoreWebhooks

MAX_EVENTS = 100_000  # transitions kept on the events stream (approximately: MAXLEN ~)
DEFAULT_RETENTION = 30 * 24 * 3600.0  # seconds a final watch is kept, unless told otherwise
REGISTER_CHUNK = 500  # registrations per round trip of register_many
REGISTER_CALL = 100  # registrations per script call: holds Redis a few milliseconds at most


_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _fields(wid: str, reg: Registration, now: float, default_timeout: float | None) -> list[str]:
    """A new watch's hash fields that vary from one registration to the next, flat."""
    timeout = reg.timeout if reg.timeout is not None else default_timeout
    return [
        "id", wid, "provider", reg.provider, "remote_id", reg.remote_id,
        "params", encode(reg.params), "labels", encode(reg.labels),
        "archive", encode(reg.archive), "abort_on_timeout", encode(reg.abort_on_timeout),
        "retry", encode(reg.retry.fields() if reg.retry else None), "webhook", encode(reg.webhook),
        FIELDS["retention"], encode(reg.retention), "timeout", encode(timeout),
        "deadline", encode(now + timeout if timeout is not None else None),
    ]  # fmt: skip


class NotRearmable(Exception):
    """Only an ``error`` or ``timed_out`` watch can be re-armed; ``state`` is where it is."""

    def __init__(self, watch_id: str, state: str) -> None:
        super().__init__(f"watch {watch_id} is {state}; only error or timed_out can be re-armed")
        self.watch_id = watch_id
        self.state = state


@dataclass(frozen=True)
class Claim:
    """A watch handed to one poll or archive job; ``fence`` proves the job still owns it."""

    watch_id: str
    fence: int


@dataclass(frozen=True)
class Commit:
    """The result of one check or archive, to be written if the fence still holds."""

    claim: Claim
    decision: Decision
    now: float
    previous: State | None = None  # the state the job saw, for the history entry
    lease_until: float | None = None  # keep the lease (archiving) instead of releasing it
    extra: dict[str, object] | None = None  # more fields: name, outputs, manifest, polls


class Store(StoreOps, StoreEvents, StoreWebhooks, StoreMetrics, StoreRetention, StoreCircuits):
    """All of taskwarden's state in one Redis, reached only through this class (its operational
    records through the methods of :class:`~taskwarden.store.ops.StoreOps`, the events stream
    through :class:`~taskwarden.store.events.StoreEvents`, the webhook outbox through
    :class:`~taskwarden.store.webhooks.StoreWebhooks`, metrics and live figures through
    :class:`~taskwarden.store.metrics.StoreMetrics`, retention through
    :class:`~taskwarden.store.retention.StoreRetention`, circuits and failing watches through
    :class:`~taskwarden.store.circuits.StoreCircuits`).

    ``retention``: seconds a watch is kept once final, per final state (a state missing:
    :data:`DEFAULT_RETENTION`); ``max_events``: the events stream's cap."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        history_limit: int = 100,
        retention: Mapping[str, float] | None = None,
        max_events: int = MAX_EVENTS,
    ) -> None:
        self.redis = client
        self.history_limit = history_limit
        self.retention = {str(s): DEFAULT_RETENTION for s in FINAL_STATES} | dict(retention or {})
        self.max_events = max_events
        self._register = client.register_script(scripts.REGISTER)
        self._claim = client.register_script(scripts.CLAIM)
        self._reap = client.register_script(scripts.REAP)
        self._commit = client.register_script(scripts.COMMIT)
        self._cancel = client.register_script(scripts.CANCEL)
        self._rearm = client.register_script(scripts.REARM)
        self._renew = client.register_script(scripts.RENEW)
        self._renew_run = client.register_script(scripts.RENEW_RUN)
        self._end_run = client.register_script(scripts.END_RUN)
        self._after = client.register_script(scripts.AFTER)
        self._light = client.register_script(scripts.LIGHT_FILTER)
        self._webhook_enqueue = client.register_script(scripts.WEBHOOK_ENQUEUE)
        self._webhook_claim = client.register_script(scripts.WEBHOOK_CLAIM)
        self._webhook_record = client.register_script(scripts.WEBHOOK_RECORD)
        self._remove = client.register_script(scripts.REMOVE)
        self._note = client.register_script(scripts.NOTE)
        self._workers = client.register_script(scripts.WORKERS)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        history_limit: int = 100,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        retention: Mapping[str, float] | None = None,
        max_events: int = MAX_EVENTS,
    ) -> Store:
        """A store on the Redis at ``url``; ``connect_timeout`` and ``timeout`` (seconds, unset:
        no limit) bound a connection attempt and a reply, for callers that must answer."""
        options: dict[str, float] = {}
        if connect_timeout is not None:
            options["socket_connect_timeout"] = connect_timeout
        if timeout is not None:
            options["socket_timeout"] = timeout
        client = connection.connect(url, decode_responses=True, health_check_interval=30, **options)
        return cls(client, history_limit=history_limit, retention=retention, max_events=max_events)

    def close(self) -> None:
        """Close the connections (the store is not used after)."""
        self.redis.close()

    def ping(self) -> None:
        """Raise unless Redis answers (readiness)."""
        self.redis.ping()

    # registration and reading

    def register(
        self, reg: Registration, now: float, default_timeout: float | None = None
    ) -> tuple[Watch, bool]:
        """Create the watch for ``reg`` unless it exists; return it and whether it is new."""
        [(wid, created)] = self.register_many([reg], now, default_timeout)
        watch = self.get(wid)
        assert watch is not None  # it was just created or already existed
        return watch, created

    def register_many(
        self,
        regs: Sequence[Registration],
        now: float,
        default_timeout: float | None = None,
        chunk: int = REGISTER_CHUNK,
    ) -> list[tuple[str, bool]]:
        """Create the watch of each of ``regs`` that does not exist, ``chunk`` registrations a
        round trip (:data:`REGISTER_CALL` a script call); return each one's watch id and
        whether it is new, in order (of two equal registrations, the second finds the first's
        watch). Each registration is all-or-nothing, so a crash halfway leaves every watch
        whole, created or not."""
        out: list[tuple[str, bool]] = []
        entry = history_entry(now, None, State.PENDING, None, "registered")
        head = [repr(now), MAX_EVENTS, "registered", keys.WATCH, keys.HISTORY, keys.BY_PROVIDER,
                keys.DUE, keys.COUNTS, keys.by_state(State.PENDING)]  # fmt: skip
        names = [keys.ALL, keys.PROVIDERS, keys.UPDATED, keys.EVENTS]
        same = _compact([
            "state", encode(State.PENDING), "created_at", encode(now), "updated_at", encode(now),
            "next_poll_at", encode(now), "fence", "0", "errors", "0", "polls", "0",
        ])[1:-1]  # fmt: skip
        for start in range(0, len(regs), chunk):
            part = regs[start : start + chunk]
            pipe = self.redis.pipeline(transaction=False)
            ids = []
            for first in range(0, len(part), REGISTER_CALL):
                args: list[Any] = list(head)
                for reg in part[first : first + REGISTER_CALL]:
                    wid = watch_id(reg.provider, reg.remote_id)
                    ids.append(wid)
                    fields = _compact(_fields(wid, reg, now, default_timeout))
                    labels = [keys.label(k, v) for k, v in reg.labels.items()]
                    args += [wid, reg.provider, reg.remote_id, entry,
                             f"{fields[:-1]},{same}]", _compact(labels)]  # fmt: skip
                self._register(keys=names, args=args, client=pipe)
            created = [flag for call in pipe.execute() for flag in call]
            out += [(wid, bool(c)) for wid, c in zip(ids, created, strict=True)]
        return out

    def get(self, wid: str) -> Watch | None:
        raw: dict[str, str] = self.redis.hgetall(keys.watch(wid))  # type: ignore[assignment]
        return Watch.from_hash(raw) if raw else None

    def find(self, ref: str) -> Watch | None:
        """A watch by its id, or by ``provider:remote_id`` (what users know)."""
        found = self.get(ref)
        if found is None and ":" in ref:
            provider, _, remote_id = ref.partition(":")
            found = self.get(watch_id(provider, remote_id))
        return found

    def get_many(self, ids: Sequence[str]) -> list[Watch | None]:
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(keys.watch(wid))
        return [Watch.from_hash(raw) if raw else None for raw in pipe.execute()]

    def history(self, wid: str) -> list[dict[str, Any]]:
        """Transitions of a watch, oldest first."""
        raw: list[str] = self.redis.lrange(keys.history(wid), 0, -1)  # type: ignore[assignment]
        return [json.loads(item) for item in reversed(raw)]

    def list_watches(
        self,
        *,
        state: str | None = None,
        provider: str | None = None,
        labels: dict[str, str] | None = None,
        q: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        updated_after: float | None = None,
        updated_before: float | None = None,
        sort: str = "-created_at",
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Watch], str | None]:
        """A page of watches and the cursor of the next page (None at the end).

        ``sort``: created_at, -created_at, updated_at or -updated_at. ``q``: a case-insensitive
        substring of the id, remote id or name. Time ranges are ``after <= t < before`` (unix
        seconds). A page may be shorter than ``limit`` with a cursor still to follow (a sparse
        filter stops scanning early); raises :class:`~taskwarden.store.queries.BadQuery` for a
        bad sort, state, limit or cursor.
        """
        query = Query(
            state=state, provider=provider, labels=tuple(sorted((labels or {}).items())), q=q,
            created_after=created_after, created_before=created_before,
            updated_after=updated_after, updated_before=updated_before, sort=sort, limit=limit,
        )  # fmt: skip
        if cursor:
            query = replace(query, after=decode_cursor(query, cursor))
        watches, position = list_page(self.redis, query, self.get_many, self._after, self._light)
        return watches, None if position is None else encode_cursor(query, position)

    # scheduling

    def claim_due(self, provider: str, now: float, limit: int, lease_until: float) -> list[Claim]:
        """Atomically take up to ``limit`` due watches of ``provider`` under a lease."""
        flat = self._claim(
            keys=[keys.due(provider), keys.LEASES, keys.in_flight(provider)],
            args=[now, limit, lease_until, keys.WATCH],
        )
        return [Claim(flat[i], int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def reap_leases(self, now: float, limit: int = 10_000) -> int:
        """Put watches whose lease expired back on the schedule; return how many."""
        return int(
            self._reap(keys=[keys.LEASES], args=[now, limit, keys.WATCH, keys.DUE, keys.IN_FLIGHT])
        )

    def renew_lease(self, claim: Claim, until: float) -> bool:
        """Hold ``claim``'s watch to ``until`` under an archive lease (its check is over)."""
        return bool(
            self._renew(
                keys=[keys.watch(claim.watch_id), keys.LEASES],
                args=[claim.fence, until, claim.watch_id, keys.IN_FLIGHT],
            )
        )

    def in_flight(self, provider: str, since: float) -> int:
        """Checks of ``provider`` claimed at ``since`` or later and not yet committed."""
        count: Any = self.redis.zcount(keys.in_flight(provider), since, "+inf")
        return int(count)

    def in_flight_by_claim(self, provider: str, since: float) -> dict[float, int]:
        """Checks of ``provider`` claimed at ``since`` or later and not yet committed, counted
        by the time of their claim (one dispatch's claims share it)."""
        key = keys.in_flight(provider)
        got: Any = self.redis.zrangebyscore(key, since, "+inf", withscores=True)
        counts: dict[float, int] = {}
        for _, at in got:
            counts[float(at)] = counts.get(float(at), 0) + 1
        return counts

    def prune_in_flight(self, provider: str, before: float) -> None:
        """Forget claims made before ``before`` (long reaped, or of watches gone)."""
        self.redis.zremrangebyscore(keys.in_flight(provider), "-inf", f"({before}")

    def due_count(self, provider: str, now: float | None = None) -> int:
        high = "+inf" if now is None else now
        count: Any = self.redis.zcount(keys.due(provider), "-inf", high)  # hints vary by version
        return int(count)

    # writing results

    def commit_many(self, commits: Iterable[Commit]) -> list[bool]:
        """Apply each commit whose fence still holds, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for commit in commits:
            self._commit_args(commit, pipe)
        return [bool(ok) for ok in pipe.execute()]

    def commit(self, commit: Commit) -> bool:
        return self.commit_many([commit])[0]

    def _commit_args(self, commit: Commit, pipe: redis.client.Pipeline) -> None:
        d = commit.decision
        fields: dict[str, object] = {
            "raw_status": d.raw_status,
            "progress": d.progress,
            "interval": d.interval,
            "errors": d.errors,
            "next_poll_at": d.next_poll_at,
        }
        if d.last_error is not None:
            fields["last_error"] = d.last_error
            fields[FIELDS["last_error_kind"]] = None  # unless the caller knows it (``extra``)
        if d.outcome is not None:
            fields[FIELDS["outcome"]] = d.outcome
        if d.progress_at is not None:  # a watch without progress never carries the fields
            fields[FIELDS["progress_at"]] = d.progress_at
            rate = d.progress_rate
            fields[FIELDS["progress_rate"]] = None if rate is None else float(f"{rate:.4g}")
        if d.state in FINAL_STATES:
            fields["finished_at"] = commit.now
        fields.update(commit.extra or {})
        flat: list[str] = []
        for key, value in fields.items():
            flat += [key, encode(value)]
        wid = commit.claim.watch_id
        entry = ""
        if d.note is not None:
            entry = history_entry(commit.now, commit.previous, d.state, d.raw_status, d.note)
        self._commit(
            keys=_change_keys(wid),
            args=[
                wid,
                commit.claim.fence,
                commit.now,
                d.state,
                encode(d.next_poll_at),
                encode(commit.lease_until),
                entry,
                self.history_limit,
                keys.BY_STATE,
                keys.DUE,
                keys.COUNTS,
                self.max_events,
                encode(d.raw_status),
                encode(d.progress),
                encode(d.note),
                encode(self.retention.get(str(d.state))),
                keys.FAILING,
                encode(None if d.state in FINAL_STATES else d.failing_since),
                keys.IN_FLIGHT,
                *flat,
            ],
            client=pipe,
        )

    def cancel(self, wid: str, now: float, note: str = "cancelled by user") -> bool | None:
        """Stop watching; None if there is no such watch, False if it had already ended."""
        entry = history_entry(now, None, State.CANCELLED, None, note)
        result = self._cancel(
            keys=_change_keys(wid),
            args=[
                wid,
                now,
                entry,
                self.history_limit,
                keys.BY_STATE,
                keys.DUE,
                keys.COUNTS,
                self.max_events,
                note,
                self.retention[State.CANCELLED],
                keys.FAILING,
                keys.IN_FLIGHT,
            ],
        )
        return None if result == -1 else bool(result)

    def rearm(self, wid: str, now: float) -> Watch | None:
        """Watch an ``error`` or ``timed_out`` watch again: pending, due now, errors reset, a new
        deadline of now + its timeout (if it has one), no outcome (the next end decides its
        own), no progress track (the next run measures its own rate), the fence bumped so that
        no older job can write. Returns the watch, None if there is no such watch; raises
        :class:`NotRearmable` (with its state) for any other state."""
        result = self._rearm(
            keys=_change_keys(wid),
            args=[
                wid,
                now,
                self.history_limit,
                keys.BY_STATE,
                keys.DUE,
                keys.COUNTS,
                self.max_events,
                FIELDS["outcome"],
                keys.FAILING,
                keys.IN_FLIGHT,
                FIELDS["progress_at"],
                FIELDS["progress_rate"],
            ],
        )
        if result == -1:
            return None
        if result != 1:
            raise NotRearmable(wid, str(result))
        return self.get(wid)

    def note(self, wid: str, now: float, text: str) -> None:
        """Add a line to a watch's history without changing the watch."""
        state = self.redis.hget(keys.watch(wid), "state")
        if state is None:  # removed (forgotten, swept): nothing to note on
            return
        entry = history_entry(now, state, state, None, text)  # type: ignore[arg-type]
        self._note(keys=[keys.watch(wid), keys.history(wid)], args=[entry, self.history_limit])

    # one archive run at a time

    def start_run(self, wid: str, run: str, ttl: float) -> bool:
        """Mark an archive run as under way, unless another one (alive) already is."""
        return bool(self.redis.set(keys.RUNNING + wid, run, nx=True, px=int(ttl * 1000)))

    def renew_run(self, wid: str, run: str, ttl: float) -> bool:
        return bool(self._renew_run(keys=[keys.RUNNING + wid], args=[run, int(ttl * 1000)]))

    def end_run(self, wid: str, run: str) -> None:
        self._end_run(keys=[keys.RUNNING + wid], args=[run])


def _change_keys(wid: str) -> list[str]:
    """The keys the scripts that change a watch's state are given (COMMIT, CANCEL, REARM)."""
    return [keys.watch(wid), keys.history(wid), keys.LEASES, keys.UPDATED, keys.EVENTS,
            keys.FINISHED]  # fmt: skip
