"""Archiving: copy the outputs of a succeeded watch (or, for an ``archive="final"`` watch that
ended otherwise, what its task left behind) into the archive, once, and record it.

:func:`archive_watch` runs under the claim its poll (or a re-sent archive job) holds; the lease
and a run token are renewed while the download goes on, so no one takes the watch over and a
redelivered message does not start a second download. The archive run itself is
:func:`taskwarden.archive.archive_outputs`; this module decides what its end means for the watch:
the final state its poll decided (the watch's ``outcome``), or a retry, or ``error``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from taskwarden import archive, logs, metrics
from taskwarden.errors import RetryableError, TaskwardenError
from taskwarden.lifecycle import Decision, State, archived, failure_decision
from taskwarden.models import Watch
from taskwarden.providers.base import Diagnoses, Provider
from taskwarden.service.rules import Policies, Record, failure_of, target_of
from taskwarden.store import Claim, Commit, Store

log = logs.get("taskwarden.worker")


async def archive_watch(
    store: Store,
    providers: Mapping[str, Provider],
    archive_store: archive.ArchiveStore,
    claim: Claim,
    *,
    policies: Policies,
    now: float,
    record: Record,
    clock: Callable[[], float] = time.time,
) -> State | None:
    """Archive what an ``archiving`` watch is to keep (the outputs of a success, the diagnostics
    of another end); return the state it ended in (None if stale).

    ``now`` is when the run starts (the manifest's time); a download can take hours, so what
    follows it (the commit, a retry's schedule, the lease renewals) reads ``clock`` instead.
    ``record`` gets the run's metrics.
    """
    watch = store.get(claim.watch_id)
    if watch is None or watch.fence != claim.fence or watch.state is not State.ARCHIVING:
        log.info("archive.stale", watch_id=claim.watch_id)
        return None
    started = time.perf_counter()
    provider = providers[watch.provider]
    wlog = log.bind(watch_id=watch.id, provider=watch.provider, remote_id=watch.remote_id)
    landing = watch.outcome or State.SUCCEEDED
    if landing is not State.SUCCEEDED and not isinstance(provider, Diagnoses):
        said = f"nothing archived: the {watch.provider} provider lists nothing a task leaves behind"
        decision = archived(watch.view(), f"{said} (the task ended {landing})")
        committed = store.commit(Commit(claim, decision, clock(), previous=watch.state))
        wlog.info("archive.nothing", state=str(landing), committed=committed)
        return landing if committed else None
    # A redelivered message (the broker's visibility timeout is shorter than a long download)
    # must not start a second download beside a live one: the run token says one is under way.
    run = secrets.token_hex(8)
    if not store.start_run(watch.id, run, policies.archive_lease_seconds / 2):
        wlog.info("archive.busy")
        return None
    try:
        manifest = await _archive_with_lease(
            store, provider, archive_store, watch, claim, run, policies, now, clock, landing
        )
    except TaskwardenError as exc:
        done = clock()
        decision = _archive_failed(watch, exc, done, policies, landing)
        kept: dict[str, object] = {"failing_since": decision.failing_since}
        store.commit(Commit(claim, decision, done, previous=watch.state, extra=kept))
        store.end_run(watch.id, run)
        outcome = "failed" if decision.state is State.ERROR else "retrying"
        record(_archive_metrics(watch.provider, outcome, started, 0))
        (wlog.error if decision.state is State.ERROR else wlog.warning)(
            "archive.failed",
            error=str(exc),
            retryable=isinstance(exc, RetryableError),
            state=str(decision.state),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return decision.state
    outputs = [
        {"name": o.name, "key": o.key, "size": o.size, "sha256": o.sha256} for o in manifest.outputs
    ]
    total = manifest.total_bytes
    if landing is State.SUCCEEDED:
        note = f"archived {len(outputs)} outputs"
    else:
        files = f"{len(outputs)} file" + ("" if len(outputs) == 1 else "s")
        note = f"archived what the {landing} task left behind: {files}"
    decision = archived(watch.view(), note)
    folder = archive.run_folder(landing, watch.deadline)
    manifest_at = archive.manifest_key(archive_store, watch.provider, watch.remote_id, folder)
    extra: dict[str, object] = {"outputs": outputs, "manifest": manifest_at}
    committed = store.commit(Commit(claim, decision, clock(), previous=watch.state, extra=extra))
    store.end_run(watch.id, run)
    record(_archive_metrics(watch.provider, "succeeded", started, total))
    wlog.info(
        "archive.done",
        outputs=len(outputs),
        bytes=total,
        state=str(landing),
        committed=committed,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return landing if committed else None


def _archive_metrics(provider: str, outcome: str, started: float, size: int) -> metrics.Batch:
    seen = metrics.Batch()
    seen.archive(provider, outcome, time.perf_counter() - started, size)
    return seen


def _archive_failed(
    watch: Watch, exc: TaskwardenError, now: float, policies: Policies, landing: State
) -> Decision:
    """A failed archive run: retried under the watch's retry policy, or ``error`` (re-armable:
    its next end archives anew). The diagnostics of a task that did not succeed keep the
    platform's words as ``last_error`` while retried, each attempt's failure noted instead."""
    failure = failure_of(exc, f"archive: {exc}")
    ended = "" if landing is State.SUCCEEDED else f" (the task ended {landing})"

    def gave_up(attempts: int, over: str) -> str:
        return f"archive failed after {attempts} attempts{over}: {exc}{ended}"

    decision = failure_decision(
        watch.view(), failure, now, policies.retry_for(watch), policies.jitter(), gave_up=gave_up
    )
    if decision.state is State.ERROR and not failure.retryable:
        return replace(decision, note=f"archive failed: {exc}{ended}")
    if decision.state is State.ARCHIVING and landing is not State.SUCCEEDED:
        said = f"archive attempt {decision.errors} failed, to be retried: {exc}"
        return replace(decision, last_error=None, note=said)
    return decision


async def _archive_with_lease(
    store: Store,
    provider: Provider,
    archive_store: archive.ArchiveStore,
    watch: Watch,
    claim: Claim,
    run: str,
    policies: Policies,
    now: float,
    clock: Callable[[], float],
    landing: State,
) -> archive.Manifest:
    """Archive, renewing the lease and the run token while the download runs, so no one
    takes the watch over and no duplicate run starts beside this one."""
    lease = policies.archive_lease_seconds

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            await asyncio.to_thread(store.renew_lease, claim, clock() + lease)
            await asyncio.to_thread(store.renew_run, watch.id, run, lease / 2)

    renewer = asyncio.ensure_future(keep_alive())
    try:
        return await archive.archive_outputs(
            archive_store,
            provider,
            target_of(watch),
            watch_id=watch.id,
            provider_name=watch.provider,
            final_status=watch.raw_status or "",
            now=now,
            chunk_size=policies.archive_chunk_size,
            max_bytes=policies.max_output_bytes,
            final_state=landing,
            folder=archive.run_folder(landing, watch.deadline),
        )
    finally:
        renewer.cancel()
