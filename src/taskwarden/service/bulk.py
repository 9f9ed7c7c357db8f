"""Bulk actions: cancel or re-arm every watch a listing filter matches, a bounded batch at a time.

A batch walks the store's listing (oldest created first, the order an action does not disturb:
cancelling or re-arming changes a watch's state and updated time, never its created time) for
at most ``limit`` matching watches, acts on each, and hands back the listing's cursor when
more remain. The same request with that cursor goes on where the batch stopped; a request
repeated is harmless, since a watch already cancelled or re-armed is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from taskwarden.lifecycle import State
from taskwarden.models import Watch
from taskwarden.store import NotRearmable, Store

Action = Literal["cancel", "retry"]
RETRYABLE = frozenset({State.ERROR, State.TIMED_OUT})
MAX_LIMIT = 500
LISTINGS = 8  # listing calls per batch at most: a sparse filter returns a short page early


@dataclass(frozen=True)
class Selection:
    """Which watches: the filters of ``ls`` (and ``GET /v1/watches``), all of which must match."""

    state: str | None = None
    provider: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    q: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None


@dataclass
class BulkResult:
    """What one batch did (or, with ``dry_run``, would do)."""

    matched: int = 0  # watches the filter matched in this batch
    changed: int = 0  # cancelled or re-armed (would be, on a dry run)
    ids: list[str] = field(default_factory=list)  # those changed, in the walked order
    skipped: dict[str, int] = field(default_factory=dict)  # left alone, by their state
    next_cursor: str | None = None  # pass back for the next batch; None: nothing left
    dry_run: bool = False


def would_change(action: Action, watch: Watch) -> bool:
    """Whether ``action`` changes ``watch``: cancel a watch not yet final, retry an error or
    timed_out one."""
    if action == "cancel":
        return not watch.state.final
    return watch.state in RETRYABLE


def apply(
    store: Store,
    action: Action,
    selection: Selection,
    *,
    now: float,
    limit: int = 100,
    cursor: str | None = None,
    dry_run: bool = False,
    on_cancelled: Callable[[str], None] | None = None,
    note: str = "cancelled in bulk",
) -> BulkResult:
    """Cancel or re-arm the next ``limit`` watches ``selection`` matches, after ``cursor``.

    ``on_cancelled`` is called with each watch this batch cancelled (to send its abort), never
    for one that had already ended. Raises :class:`~taskwarden.store.BadQuery` for a bad
    filter, limit or cursor."""
    limit = min(limit, MAX_LIMIT)
    result = BulkResult(dry_run=dry_run)
    listing = {**asdict(selection), "labels": selection.labels or None}
    for _ in range(LISTINGS):
        page, cursor = store.list_watches(
            **listing, sort="created_at", limit=limit - result.matched, cursor=cursor
        )
        for watch in page:
            result.matched += 1
            if _act(store, action, watch, now=now, dry_run=dry_run, note=note):
                result.changed += 1
                result.ids.append(watch.id)
                if action == "cancel" and on_cancelled is not None and not dry_run:
                    on_cancelled(watch.id)
            else:
                state = str(watch.state)
                result.skipped[state] = result.skipped.get(state, 0) + 1
        if cursor is None or result.matched >= limit:
            break
    result.next_cursor = cursor
    return result


def _act(
    store: Store, action: Action, watch: Watch, *, now: float, dry_run: bool, note: str
) -> bool:
    if dry_run or not would_change(action, watch):
        return would_change(action, watch)
    if action == "cancel":
        return bool(store.cancel(watch.id, now, note))
    try:
        return store.rearm(watch.id, now) is not None
    except NotRearmable:  # it moved on since it was listed
        return False
