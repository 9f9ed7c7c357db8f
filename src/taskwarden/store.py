"""The Redis store: watch records, the due-time index, leases with fencing, and history.

Layout (names in :mod:`taskwarden.keys`):

- ``watch:<id>`` hash, one per watch; ``history:<id>`` list, newest first, bounded.
- ``due:<provider>`` sorted set scored by the next check time: the only schedule there is.
- ``leases`` sorted set scored by lease expiry. Claiming a due watch moves it from ``due`` to
  ``leases`` and bumps its ``fence``; only a commit carrying the current fence is applied, so a
  poll or archive that was lost, duplicated or overtaken can never write. An expired lease goes
  back to ``due`` (and bumps the fence again) so a lost job is dispatched anew.
- ``watches``, ``state:<state>``, ``provider:<name>`` sorted sets, for listing.

Every multi-key change is one Lua script, so a crash between two writes cannot tear a watch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from taskwarden import keys
from taskwarden.lifecycle import FINAL_STATES, Decision, State
from taskwarden.models import Registration, Watch, encode, watch_id

MAX_DEADLETTERS = 10_000
MAX_DEAD_BODY = 4096  # bytes of a refused message kept: enough to see what was wrong

_FINAL_LUA = "{" + ", ".join(f"['{s}'] = true" for s in sorted(FINAL_STATES)) + "}"

_REGISTER = """
local id, now, provider, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('LPUSH', KEYS[2], entry)
redis.call('ZADD', KEYS[3], now, id)
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZADD', KEYS[5], now, id)
redis.call('ZADD', KEYS[6], now, id)
redis.call('SADD', KEYS[7], provider)
return 1
"""

_CLAIM = """
local now, limit, lease_until, watch_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', watch_prefix .. id) == 1 then
    local fence = redis.call('HINCRBY', watch_prefix .. id, 'fence', 1)
    redis.call('ZADD', KEYS[2], lease_until, id)
    out[#out + 1] = id
    out[#out + 1] = fence
  end
end
return out
"""

_REAP = (
    "local final = "
    + _FINAL_LUA
    + """
local now, limit, watch_prefix, due_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local w = redis.call('HMGET', watch_prefix .. id, 'provider', 'state')
  if w[1] and not final[w[2]] then
    redis.call('HINCRBY', watch_prefix .. id, 'fence', 1)
    redis.call('ZADD', due_prefix .. w[1], now, id)
  end
end
return #ids
"""
)

# KEYS: watch, history, leases. ARGV: id, fence, now, state, next_poll_at, lease_until, entry,
# history_limit, state_prefix, due_prefix, then field/value pairs.
_COMMIT = (
    "local final = "
    + _FINAL_LUA
    + """
local id, fence, now, state, next_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lease_until, entry, limit = ARGV[6], ARGV[7], tonumber(ARGV[8])
local state_prefix, due_prefix = ARGV[9], ARGV[10]
local w = redis.call('HMGET', KEYS[1], 'fence', 'state', 'provider')
if w[1] ~= fence then return 0 end
if final[w[2]] then return 0 end
local fields = {'state', state, 'updated_at', now}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if w[2] ~= state then
  redis.call('ZREM', state_prefix .. w[2], id)
  redis.call('ZADD', state_prefix .. state, now, id)
end
if next_at ~= '' then redis.call('ZADD', due_prefix .. w[3], next_at, id) end
if lease_until ~= '' then
  redis.call('ZADD', KEYS[3], lease_until, id)
else
  redis.call('ZREM', KEYS[3], id)
end
if entry ~= '' then
  redis.call('LPUSH', KEYS[2], entry)
  redis.call('LTRIM', KEYS[2], 0, limit - 1)
end
return 1
"""
)

# KEYS: watch, history, leases. ARGV: id, now, entry, history_limit, state_prefix, due_prefix.
_CANCEL = (
    "local final = "
    + _FINAL_LUA
    + """
local id, now, entry, limit, state_prefix, due_prefix =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local w = redis.call('HMGET', KEYS[1], 'state', 'provider')
if not w[1] then return -1 end
if final[w[1]] then return 0 end
redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_at', now, 'finished_at', now,
  'next_poll_at', '')
redis.call('ZREM', state_prefix .. w[1], id)
redis.call('ZADD', state_prefix .. 'cancelled', now, id)
redis.call('ZREM', due_prefix .. w[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, limit - 1)
return 1
"""
)

_RENEW = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


_RENEW_RUN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

_END_RUN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


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


def history_entry(
    now: float, old: State | None, new: State, raw: str | None, note: str | None
) -> str:
    entry = {"at": now, "from": old, "to": new, "raw": raw, "note": note}
    return json.dumps(entry, separators=(",", ":"))


class Store:
    """All of taskwarden's state in one Redis, reached only through this class."""

    def __init__(self, client: redis.Redis, *, history_limit: int = 100) -> None:
        self.redis = client
        self.history_limit = history_limit
        self._register = client.register_script(_REGISTER)
        self._claim = client.register_script(_CLAIM)
        self._reap = client.register_script(_REAP)
        self._commit = client.register_script(_COMMIT)
        self._cancel = client.register_script(_CANCEL)
        self._renew = client.register_script(_RENEW)
        self._renew_run = client.register_script(_RENEW_RUN)
        self._end_run = client.register_script(_END_RUN)

    @classmethod
    def from_url(cls, url: str, *, history_limit: int = 100) -> Store:
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        return cls(client, history_limit=history_limit)

    # registration and reading

    def register(
        self, reg: Registration, now: float, default_timeout: float | None = None
    ) -> tuple[Watch, bool]:
        """Create the watch for ``reg`` unless it exists; return it and whether it is new."""
        wid = watch_id(reg.provider, reg.remote_id)
        timeout = reg.timeout if reg.timeout is not None else default_timeout
        fields: dict[str, object] = {
            "id": wid,
            "provider": reg.provider,
            "remote_id": reg.remote_id,
            "state": State.PENDING,
            "created_at": now,
            "updated_at": now,
            "params": reg.params,
            "labels": reg.labels,
            "archive": reg.archive,
            "abort_on_timeout": reg.abort_on_timeout,
            "timeout": timeout,
            "deadline": now + timeout if timeout is not None else None,
            "next_poll_at": now,
            "fence": 0,
            "errors": 0,
            "polls": 0,
        }
        flat: list[str] = []
        for key, value in fields.items():
            flat += [key, encode(value)]
        entry = history_entry(now, None, State.PENDING, None, "registered")
        created = self._register(
            keys=[
                keys.watch(wid),
                keys.history(wid),
                keys.ALL,
                keys.by_state(State.PENDING),
                keys.by_provider(reg.provider),
                keys.due(reg.provider),
                keys.PROVIDERS,
            ],
            args=[wid, now, reg.provider, entry, *flat],
        )
        watch = self.get(wid)
        assert watch is not None  # it was just created or already existed
        return watch, bool(created)

    def get(self, wid: str) -> Watch | None:
        raw: dict[str, str] = self.redis.hgetall(keys.watch(wid))  # type: ignore[assignment]
        return Watch.from_hash(raw) if raw else None

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
        limit: int = 100,
        offset: int = 0,
    ) -> list[Watch]:
        """Watches, newest first, filtered by state and provider."""
        index = (
            keys.by_state(state) if state else keys.by_provider(provider) if provider else keys.ALL
        )
        ids: list[str] = []
        start = offset
        # Filtering by both state and provider walks the state index and skips other providers.
        while len(ids) < limit:
            chunk: list[str] = self.redis.zrevrange(index, start, start + 999)  # type: ignore[assignment]
            if not chunk:
                break
            start += len(chunk)
            ids += chunk
            if not (state and provider):
                break
        watches = [w for w in self.get_many(ids) if w is not None]
        if state and provider:
            watches = [w for w in watches if w.provider == provider]
        return watches[:limit]

    def providers(self) -> list[str]:
        return sorted(self.redis.smembers(keys.PROVIDERS))  # type: ignore[arg-type]

    def counts(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for state in State:
            pipe.zcard(keys.by_state(state))
        return dict(zip([str(s) for s in State], pipe.execute(), strict=True))

    # scheduling

    def claim_due(self, provider: str, now: float, limit: int, lease_until: float) -> list[Claim]:
        """Atomically take up to ``limit`` due watches of ``provider`` under a lease."""
        flat = self._claim(
            keys=[keys.due(provider), keys.LEASES], args=[now, limit, lease_until, keys.WATCH]
        )
        return [Claim(flat[i], int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def reap_leases(self, now: float, limit: int = 10_000) -> int:
        """Put watches whose lease expired back on the schedule; return how many."""
        return int(self._reap(keys=[keys.LEASES], args=[now, limit, keys.WATCH, keys.DUE]))

    def renew_lease(self, claim: Claim, until: float) -> bool:
        return bool(
            self._renew(
                keys=[keys.watch(claim.watch_id), keys.LEASES],
                args=[claim.fence, until, claim.watch_id],
            )
        )

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
            keys=[keys.watch(wid), keys.history(wid), keys.LEASES],
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
                *flat,
            ],
            client=pipe,
        )

    def cancel(self, wid: str, now: float, note: str = "cancelled by user") -> bool | None:
        """Stop watching; None if there is no such watch, False if it had already ended."""
        entry = history_entry(now, None, State.CANCELLED, None, note)
        result = self._cancel(
            keys=[keys.watch(wid), keys.history(wid), keys.LEASES],
            args=[wid, now, entry, self.history_limit, keys.BY_STATE, keys.DUE],
        )
        return None if result == -1 else bool(result)

    def note(self, wid: str, now: float, text: str) -> None:
        """Add a line to a watch's history without changing the watch."""
        state = self.redis.hget(keys.watch(wid), "state")
        entry = history_entry(now, state, state, None, text)  # type: ignore[arg-type]
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(keys.history(wid), entry)
        pipe.ltrim(keys.history(wid), 0, self.history_limit - 1)
        pipe.execute()

    # one archive run at a time

    def start_run(self, wid: str, run: str, ttl: float) -> bool:
        """Mark an archive run as under way, unless another one (alive) already is."""
        return bool(self.redis.set(keys.RUNNING + wid, run, nx=True, px=int(ttl * 1000)))

    def renew_run(self, wid: str, run: str, ttl: float) -> bool:
        return bool(self._renew_run(keys=[keys.RUNNING + wid], args=[run, int(ttl * 1000)]))

    def end_run(self, wid: str, run: str) -> None:
        self._end_run(keys=[keys.RUNNING + wid], args=[run])

    # refused input

    def dead_letter(self, now: float, source: str, reason: str, body: object) -> None:
        """Keep a refused registration for `taskwarden deadletters` (capped, oldest go first)."""
        try:
            text = json.dumps(body, default=repr)
        except (TypeError, ValueError):
            text = repr(body)
        self.redis.xadd(
            keys.DEADLETTERS,
            {"at": now, "source": source, "reason": reason[:2000], "body": text[:MAX_DEAD_BODY]},
            maxlen=MAX_DEADLETTERS,
            approximate=True,
        )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Refused registrations, newest first."""
        entries: list[tuple[str, dict[str, str]]] = self.redis.xrevrange(  # type: ignore[assignment]
            keys.DEADLETTERS, count=limit
        )
        return [
            {"id": entry_id, **fields, "at": float(fields["at"])} for entry_id, fields in entries
        ]

    # liveness

    def heartbeat(self, component: str, now: float, ttl: float) -> None:
        self.redis.set(keys.HEARTBEAT + component, now, px=int(ttl * 1000))

    def last_heartbeat(self, component: str) -> float | None:
        value = cast(str | None, self.redis.get(keys.HEARTBEAT + component))
        return float(value) if value else None
