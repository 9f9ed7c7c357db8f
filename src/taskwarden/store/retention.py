"""Retention: final watches leave Redis once their time has come, and one watch on request.

``finished`` (a sorted set, :data:`taskwarden.keys.FINISHED`) scores every final watch by when
it may be removed; the scripts that make a watch final write it, a re-arm takes it out
(:mod:`taskwarden.store.scripts`). :meth:`StoreRetention.sweep` removes at most ``limit`` of
those whose time has come, :meth:`StoreRetention.forget` one watch; both through the one
``REMOVE`` script, which deletes the hash, the history, every index entry and the count in
one step, so listings and counts never disagree with the watches that are left. No path here
scans the keyspace: every key a watch has is named by its id, provider, state and labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis import Redis

from taskwarden import keys

RemoveMode = Literal["due", "final", "force"]


@dataclass(frozen=True)
class Forgotten:
    """What :meth:`StoreRetention.forget` did: ``removed``, or the state that kept the watch
    (a watch that is not final, without ``force``); ``found`` False: there was no such watch."""

    found: bool
    removed: bool
    state: str | None = None


class StoreRetention:
    """The retention sweep and ``forget``; a mixin of :class:`~taskwarden.store.Store`, which
    provides ``redis`` and the registered ``_remove`` script."""

    redis: Redis
    _remove: Any

    def sweep(self, now: float, limit: int) -> int:
        """Remove up to ``limit`` final watches whose retention has passed by ``now``; return
        how many went."""
        ids = cast(
            list[str], self.redis.zrangebyscore(keys.FINISHED, "-inf", now, start=0, num=limit)
        )
        if not ids:
            return 0
        verdicts = self._remove_watches("due", now, ids)
        return sum(1 for v in verdicts if v == 1)

    def forget(self, wid: str, *, force: bool = False) -> Forgotten:
        """Remove one watch now, whatever its retention: a final one, or with ``force`` one in
        any state (its checks in flight then find nothing to write to)."""
        for _ in range(3):  # its labels read, then changed: it was forgotten and registered anew
            (verdict,) = self._remove_watches("force" if force else "final", 0.0, [wid])
            if verdict != "changed":
                break
        if verdict == 0:
            return Forgotten(found=False, removed=False)
        if verdict == 1:
            return Forgotten(found=True, removed=True)
        return Forgotten(found=True, removed=False, state=str(verdict))

    def _remove_watches(self, mode: RemoveMode, now: float, ids: Sequence[str]) -> list[object]:
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.hget(keys.watch(wid), "labels")
        seen = cast(list[str | None], pipe.execute())
        args: list[object] = [mode, now, keys.WATCH, keys.HISTORY, keys.BY_STATE, keys.BY_PROVIDER,
                              keys.DUE, keys.COUNTS, keys.RUNNING, keys.FAILING,
                              keys.IN_FLIGHT]  # fmt: skip
        for wid, labels in zip(ids, seen, strict=True):
            pairs = _labels(labels)
            args += [wid, labels or "", len(pairs), *(keys.label(k, v) for k, v in pairs)]
        return cast(
            list[object],
            self._remove(keys=[keys.FINISHED, keys.ALL, keys.UPDATED, keys.LEASES], args=args),
        )


def _labels(text: str | None) -> list[tuple[str, str]]:
    try:
        labels = json.loads(text) if text else {}
    except ValueError:
        return []
    return [(str(k), str(v)) for k, v in labels.items()] if isinstance(labels, dict) else []
