"""Listing watches: filters, sort and cursor pagination over the store's sorted-set indexes.

A page is found without reading every watch. The sort key picks the index walked in order
(``watches`` and the narrower ``provider:<p>`` and ``label:<pair>`` sets are scored by created
at; ``updated`` by updated at). Membership filters (state, provider, labels) are sorted sets
checked a chunk at a time with ZMSCORE; when one of them is small, its members are taken
whole and ordered in memory instead. What no index answers (the text search, a time range on
the other key) is checked on the watch itself.

The cursor is the position (score and id) of the last watch examined, plus a fingerprint of
the query, so pages stay stable while new watches arrive and a cursor cannot be replayed
against another query. A page may hold fewer than ``limit`` watches when a sparse filter
would otherwise scan without end; only a ``None`` cursor means the end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from taskwarden import keys
from taskwarden.lifecycle import State
from taskwarden.models import Watch

SORTS = ("created_at", "-created_at", "updated_at", "-updated_at")
# ids read from an index per round trip, and checked per light-filter script call: larger
# chunks scanned no faster (the per-id work dominates) and held the single-threaded Redis longer
CHUNK = 500
SMALL_SET = 5_000  # a filter set this small is read whole and ordered in memory
SCAN_BUDGET = 20_000  # ids examined per page at most before a short page is returned

Position = tuple[float, str]  # (score, id) in the walked order


class BadQuery(ValueError):
    """A listing request that cannot be answered: the message says why."""


@dataclass(frozen=True)
class Query:
    """A validated listing request."""

    state: str | None = None
    provider: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    q: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None
    sort: str = "-created_at"
    limit: int = 50
    after: Position | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise BadQuery(f"sort must be one of {', '.join(SORTS)}; got {self.sort!r}")
        if self.state is not None and self.state not in set(State):
            raise BadQuery(
                f"unknown state {self.state!r}; one of {', '.join(s.value for s in State)}"
            )
        if self.limit < 1:
            raise BadQuery(f"limit must be at least 1; got {self.limit}")

    @property
    def key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def fingerprint(self) -> str:
        what = [self.state, self.provider, self.labels, self.q, self.created_after,
                self.created_before, self.updated_after, self.updated_before,
                self.sort]  # fmt: skip
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]

    def range_of(self, key: str) -> tuple[float | None, float | None]:
        if key == "created_at":
            return self.created_after, self.created_before
        return self.updated_after, self.updated_before

    def matches(self, watch: Watch) -> bool:
        """The checks no index answers (applied to every candidate; cheap for the others)."""
        for key, value in (("created_at", watch.created_at), ("updated_at", watch.updated_at)):
            low, high = self.range_of(key)
            if (low is not None and value < low) or (high is not None and value >= high):
                return False
        if self.state is not None and watch.state != self.state:
            return False  # it moved on between the index read and the hash read
        if self.q:
            needle = self.q.casefold()
            return any(needle in (text or "").casefold()
                       for text in (watch.id, watch.remote_id, watch.name))  # fmt: skip
        return True


def encode_cursor(query: Query, position: Position) -> str:
    raw = json.dumps([query.fingerprint(), position[0], position[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(query: Query, cursor: str) -> Position:
    """The position a cursor names; :class:`BadQuery` if it is malformed or from another query."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        fingerprint, score, member = json.loads(raw)
        position = (float(score), str(member))
    except (ValueError, TypeError, binascii.Error):
        raise BadQuery("cursor is not one this server returned") from None
    if fingerprint != query.fingerprint():
        raise BadQuery("cursor belongs to a query with other filters or another sort")
    return position


def list_page(
    client: redis.Redis,
    query: Query,
    get_many: Callable[[Sequence[str]], list[Watch | None]],
    after_script: Callable[..., Any],
    light_script: Callable[..., Any],
) -> tuple[list[Watch], Position | None]:
    """One page of watches and the position to continue from (None at the end).

    ``after_script`` and ``light_script`` are :data:`~taskwarden.store.scripts.AFTER` and
    :data:`~taskwarden.store.scripts.LIGHT_FILTER`, registered once by the Store."""
    walk_index, filters = _plan(client, query)
    light = bool(query.q) or query.range_of(_other(query.key)) != (None, None)
    if walk_index is None:
        candidates = _in_memory(client, query, filters)
    else:
        candidates = _walk(client, query, walk_index, after_script)
    script = light_script if light else None
    found: list[Watch] = []
    examined = 0
    last: Position | None = None
    for chunk in candidates:
        kept = _members_of_all(client, chunk, filters) if walk_index is not None else chunk
        if script is not None and kept:
            kept = _light_filter(script, query, kept)
        start = 0
        while start < len(kept):
            part = kept[start : start + max(query.limit + 1 - len(found), 16)]
            start += len(part)
            for (member, score), watch in zip(part, get_many([m for m, _ in part]), strict=True):
                if watch is not None and query.matches(watch):
                    if len(found) == query.limit:
                        return found, last
                    found.append(watch)
                last = (score, member)
        last = (chunk[-1][1], chunk[-1][0])  # the whole chunk was examined
        examined += len(chunk)
        if examined >= SCAN_BUDGET:
            return found, last
    return found, None


def _other(key: str) -> str:
    return "updated_at" if key == "created_at" else "created_at"


def _light_filter(
    script: Callable[..., Any], query: Query, chunk: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    """Drop, in one script call, the candidates that are gone, out of the other time range, or
    sure not to match the text search, before whole watches are read. What it keeps is a
    superset: :meth:`Query.matches` decides the rest."""
    low, high = query.range_of(_other(query.key))
    needle = query.q.casefold() if query.q else ""
    kept = script(
        keys=[keys.watch(member) for member, _ in chunk],
        args=[len(keys.WATCH), needle, _other(query.key), _bound(low), _bound(high)],
    )
    return [chunk[i - 1] for i in kept]


def _bound(value: float | None) -> str:
    return "" if value is None else repr(value)


def _plan(client: redis.Redis, query: Query) -> tuple[str | None, list[str]]:
    """The index to walk (None: order a small filter set in memory) and the sets to check."""
    sort_index = keys.ALL if query.key == "created_at" else keys.UPDATED
    filters: list[str] = []
    if query.state is not None:
        filters.append(keys.by_state(query.state))
    if query.provider is not None:
        filters.append(keys.by_provider(query.provider))
    filters += [keys.label(k, v) for k, v in query.labels]
    if not filters:
        return sort_index, []
    pipe = client.pipeline(transaction=False)
    for key in filters:
        pipe.zcard(key)
    sizes = dict(zip(filters, pipe.execute(), strict=True))
    smallest = min(filters, key=lambda k: sizes[k])
    if sizes[smallest] <= SMALL_SET:
        return None, [smallest, *(k for k in filters if k != smallest)]
    walkable = [k for k in filters if not k.startswith(keys.BY_STATE)]
    if query.key == "created_at" and walkable:
        # provider and label sets are scored by created at: walk the narrowest of them
        walk = min(walkable, key=lambda k: sizes[k])
        return walk, [k for k in filters if k != walk]
    return sort_index, filters


def _score_bounds(query: Query) -> tuple[str, str]:
    low, high = query.range_of(query.key)
    return ("-inf" if low is None else repr(low)), ("+inf" if high is None else f"({high!r}")


def _walk(
    client: redis.Redis, query: Query, index: str, after_script: Callable[..., Any]
) -> Iterator[list[tuple[str, float]]]:
    """Chunks of (id, score) from ``index`` in the query's order, after its position."""
    low, high = _score_bounds(query)
    position = query.after
    desc = query.descending
    count = min(CHUNK, query.limit + 1)  # a first page reads little; a long walk, more
    while True:
        if position is None:
            chunk = _by_score(client, index, low, high, desc, count)
        else:
            raw = after_script(keys=[index], args=[position[1], repr(position[0]), count,
                                                   "1" if desc else "0"])  # fmt: skip
            if raw is None:
                chunk = _resume_by_score(client, index, position, low, high, desc, count)
            else:
                chunk = [(raw[i], float(raw[i + 1])) for i in range(0, len(raw), 2)]
        kept = [(m, s) for m, s in chunk if _in_range(query, s)]
        if kept:
            yield kept
        if len(kept) < len(chunk) or len(chunk) < count:
            return  # past the end of the time range, or of the index
        position = (chunk[-1][1], chunk[-1][0])
        count = min(CHUNK, count * 4)


def _in_range(query: Query, score: float) -> bool:
    low, high = query.range_of(query.key)
    return (low is None or score >= low) and (high is None or score < high)


def _by_score(
    client: redis.Redis, index: str, low: str, high: str, desc: bool, count: int
) -> list[tuple[str, float]]:
    if desc:
        got = client.zrevrangebyscore(index, high, low, start=0, num=count, withscores=True)
    else:
        got = client.zrangebyscore(index, low, high, start=0, num=count, withscores=True)
    return cast(list[tuple[str, float]], got)


def _resume_by_score(
    client: redis.Redis,
    index: str,
    position: Position,
    low: str,
    high: str,
    desc: bool,
    count: int,
) -> list[tuple[str, float]]:
    """What follows a position whose member left the index (or moved): the rest of its score's
    ties, then the scores beyond it. Rare, so a long run of ties costs what it costs."""
    score, member = position
    ties = _by_score(client, index, repr(score), repr(score), desc, count=-1)
    ties = [(m, s) for m, s in ties if (m < member if desc else m > member)]
    if desc:
        rest = _by_score(client, index, low, f"({score!r}", desc, count)
    else:
        rest = _by_score(client, index, f"({score!r}", high, desc, count)
    return (ties + rest)[: max(count, len(ties))]


def _members_of_all(
    client: redis.Redis, chunk: list[tuple[str, float]], filters: list[str]
) -> list[tuple[str, float]]:
    members = [m for m, _ in chunk]
    pipe = client.pipeline(transaction=False)
    for key in filters:
        pipe.zmscore(key, members)
    found = pipe.execute()
    return [item for i, item in enumerate(chunk) if all(f[i] is not None for f in found)]


def _in_memory(
    client: redis.Redis, query: Query, filters: list[str]
) -> Iterator[list[tuple[str, float]]]:
    """The small first filter set read whole, checked against the others, ordered here."""
    members = cast(list[str], client.zrange(filters[0], 0, -1))
    if not members:
        return
    sort_index = keys.ALL if query.key == "created_at" else keys.UPDATED
    pipe = client.pipeline(transaction=False)
    pipe.zmscore(sort_index, members)
    for key in filters[1:]:
        pipe.zmscore(key, members)
    scores, *others = pipe.execute()
    rows = [(float(score), member)
            for i, (member, score) in enumerate(zip(members, scores, strict=True))
            if score is not None and all(o[i] is not None for o in others)
            and _in_range(query, float(score))]  # fmt: skip
    rows.sort(reverse=query.descending)
    if query.after is not None:
        after = query.after
        rows = [r for r in rows if (r < after if query.descending else r > after)]
    for start in range(0, len(rows), CHUNK):
        yield [(member, score) for score, member in rows[start : start + CHUNK]]
