"""Aborting: ask a platform to stop the remote task of a watch (a cancel with ``--abort``, or a
watch that timed out with ``abort_on_timeout``), and note in its history how that went."""

from __future__ import annotations

from collections.abc import Mapping

from taskwarden import logs
from taskwarden.errors import TaskwardenError
from taskwarden.providers.base import Provider
from taskwarden.service.rules import target_of
from taskwarden.store import Store

log = logs.get("taskwarden.worker")


async def abort_remote(
    store: Store, providers: Mapping[str, Provider], watch_id: str, *, now: float
) -> None:
    """Ask the platform to stop the remote task of a watch; ``now`` dates the history note."""
    watch = store.get(watch_id)
    if watch is None:
        return
    wlog = log.bind(watch_id=watch.id, provider=watch.provider, remote_id=watch.remote_id)
    try:
        await providers[watch.provider].abort(target_of(watch))
    except TaskwardenError as exc:
        store.note(watch.id, now, f"abort failed: {exc}")
        wlog.warning("abort.failed", error=str(exc))
        return
    store.note(watch.id, now, "abort sent to the platform")
    wlog.info("abort.sent")
