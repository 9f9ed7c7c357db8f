"""Polling: check a batch of claimed watches once each and schedule what follows.

:func:`poll_batch` does four things, each a function below: sort the claims (:func:`sort_claims`:
stale ones are dropped, an ``archiving`` watch gets its archive sent again, the rest are live),
check the live ones concurrently (:func:`check_all`), decide each one's next step with the pure
:func:`~taskwarden.lifecycle.decide` (:func:`decide_all`), and commit every decision in one
round trip, then send the archives and aborts they call for (:func:`commit_all`). The clock is
read once, by the caller: ``now`` is the time of every decision in the batch.

Every check runs under ``check_deadline`` (:func:`check`): connect, headers and the whole body
of every request it makes, so that a platform that accepts and never answers, or trickles its
answer a byte at a time (which no per-read timeout trips), ends in a retryable failure instead
of holding a worker for ever. A rate-limit wait is no fault of the platform: it pushes the
deadline back by as long (:func:`extend_deadline`).

Between checking and deciding, what the checks say of the platform goes to its circuit
(:func:`observe_circuit`); while the circuit is open, outage failures are held
(:func:`~taskwarden.lifecycle.held`) instead of counted against their watches, and a batch
claimed before it opened checks only its first watch, as one more probe, leaving the others
due (:func:`defer_all`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from taskwarden import circuit, logs, metrics
from taskwarden.errors import PermanentError, ProviderUnavailable, RetryableError
from taskwarden.lifecycle import (
    INTERNAL_ERROR,
    Decision,
    Failure,
    Observation,
    State,
    decide,
    deferred,
    held,
)
from taskwarden.models import FIELDS, Watch, observed_fields
from taskwarden.providers.base import Provider
from taskwarden.service.rules import (
    Policies,
    Record,
    SendAbort,
    SendArchive,
    failure_of,
    target_of,
)
from taskwarden.store import Claim, Commit, Store

log = logs.get("taskwarden.worker")

Seen = Observation | Failure

# the deadline of the check running in this asyncio task, for extend_deadline
_deadline: ContextVar[asyncio.Timeout | None] = ContextVar("taskwarden_deadline", default=None)


@dataclass
class PollResult:
    """What became of a batch: watches checked, results written, claims found stale (or
    overtaken by the time their result was written), and archive jobs sent."""

    polled: int = 0
    committed: int = 0
    stale: int = 0
    archives: int = 0


@dataclass
class SortedClaims:
    """A batch's claims, by what is to be done with them."""

    stale: int = 0  # overtaken by a newer claim, a cancel, or already final
    archiving: list[Claim] = field(default_factory=list)  # their archive job is to be sent again
    live: list[tuple[Claim, Watch]] = field(default_factory=list)  # to be checked


async def poll_batch(
    store: Store,
    provider: Provider,
    claims: Sequence[Claim],
    *,
    policies: Policies,
    now: float,
    send_archive: SendArchive,
    send_abort: SendAbort,
    record: Record,
) -> PollResult:
    """Check each claimed watch once with ``provider``, record what was seen, schedule the next
    check; ``record`` gets the batch's metrics."""
    result = PollResult()
    batch = sort_claims(claims, store.get_many([c.watch_id for c in claims]))
    result.stale = batch.stale
    until = now + policies.archive_lease_seconds
    result.archives = resend_archives(store, batch.archiving, until, send_archive)
    if not batch.live:
        return result
    if len(batch.live) > 1 and circuit_open(store, provider.name, policies):
        batch.live, later = batch.live[:1], batch.live[1:]
        _, stale, _ = commit_all(store, defer_all(later, now), set(), send_archive, send_abort)
        result.stale += stale
    watches = [w for _, w in batch.live]
    seen = await check_all(provider, watches, policies.poll_concurrency, policies.check_deadline)
    observed = metrics.Batch()
    hold = observe_circuit(store, provider.name, [s for s, _ in seen], now, policies, observed)
    commits = decide_all(batch.live, [s for s, _ in seen], now, policies, hold=hold)
    for watch, commit, (outcome, duration) in zip(watches, commits, seen, strict=True):
        observed.poll(watch.provider, _outcome(outcome), duration)
        _log_poll(watch, outcome, commit.decision, now, duration)
    result.polled = len(commits)
    aborting = {w.id for w in watches if w.abort_on_timeout}
    committed, stale, archives = commit_all(store, commits, aborting, send_archive, send_abort)
    result.committed = committed
    result.stale += stale
    result.archives += archives
    record(observed)
    return result


def sort_claims(claims: Sequence[Claim], watches: Sequence[Watch | None]) -> SortedClaims:
    """Sort ``claims`` by what their ``watches`` (as read, in the same order) are now."""
    batch = SortedClaims()
    for claim, watch in zip(claims, watches, strict=True):
        if watch is None or watch.fence != claim.fence or watch.state.final:
            batch.stale += 1
        elif watch.state is State.ARCHIVING:
            # its archive job was lost or is due for a retry: send it again under this claim
            batch.archiving.append(claim)
        else:
            batch.live.append((claim, watch))
    return batch


def resend_archives(
    store: Store, claims: Sequence[Claim], until: float, send_archive: SendArchive
) -> int:
    """Send the archive job of each claim again, under an archive lease to ``until``; a claim
    whose lease cannot be renewed (its fence moved on) is left alone. Returns how many went."""
    sent = 0
    for claim in claims:
        if store.renew_lease(claim, until):
            send_archive(claim)
            sent += 1
    return sent


async def check_all(
    provider: Provider,
    watches: Sequence[Watch],
    concurrency: int,
    deadline: float | None = None,
) -> list[tuple[Seen, float]]:
    """Check every watch, at most ``concurrency`` at once, each within ``deadline`` seconds:
    what each check saw, and its seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def one(watch: Watch) -> tuple[Seen, float]:
        async with gate:
            started = time.perf_counter()
            seen = await check(provider, watch, deadline)
            return seen, time.perf_counter() - started

    return await asyncio.gather(*(one(w) for w in watches))


def extend_deadline(seconds: float) -> None:
    """Push the deadline of the check running in this task back by ``seconds`` (a wait that is
    not the platform's doing: its rate limit). Outside a check, nothing happens."""
    timeout = _deadline.get()
    when = None if timeout is None else timeout.when()
    if timeout is not None and when is not None and seconds > 0:
        timeout.reschedule(when + seconds)


async def check(provider: Provider, watch: Watch, deadline: float | None = None) -> Seen:
    """One status check of ``watch``, cut off after ``deadline`` seconds (None: none); a
    failure, a check past its deadline, or a provider's bug, is a :class:`Failure`."""
    try:
        async with asyncio.timeout(deadline) as timeout:
            token = _deadline.set(timeout)
            try:
                return await _fetch(provider, watch)
            finally:
                _deadline.reset(token)
    except TimeoutError:
        if not timeout.expired():
            raise
        message = f"no complete answer within the check deadline ({deadline:g} s)"
        return failure_of(ProviderUnavailable(message, provider=provider.name))


async def _fetch(provider: Provider, watch: Watch) -> Seen:
    try:
        return await provider.fetch_status(target_of(watch))
    except (RetryableError, PermanentError) as exc:
        return failure_of(exc)
    except Exception as exc:  # a provider bug must not kill the batch; retries bound it
        log.exception("poll.provider_bug", provider=provider.name, remote_id=watch.remote_id)
        return Failure(
            f"internal error: {type(exc).__name__}: {exc}", retryable=True, kind=INTERNAL_ERROR
        )


def observe_circuit(
    store: Store,
    provider: str,
    seen: Sequence[Seen],
    now: float,
    policies: Policies,
    observed: metrics.Batch,
) -> bool:
    """Tell ``provider``'s circuit what the checks of a batch said of the platform; returns
    whether it is open after (the batch's outage failures are then held)."""
    if not policies.circuit.enabled:
        return False
    signals = [circuit.outage_signal(s) for s in seen]
    if all(signal is None for signal in signals):
        return False  # nothing to tell it, and no outage failure to hold

    def change(before: circuit.Circuit) -> tuple[circuit.Circuit, circuit.Circuit]:
        return circuit.observe(before, signals, now, policies.circuit), before

    after, before = store.change_circuit(provider, change)
    if after.is_open and not before.is_open:
        observed.inc(metrics.CIRCUIT_OPENED, provider)
        log.warning("circuit.opened", provider=provider, failures=after.failures)
    elif before.is_open and not after.is_open:
        down = now - before.opened_at if before.opened_at is not None else None
        log.info("circuit.closed", provider=provider, open_s=down, probes=after.probes)
    return after.is_open


def circuit_open(store: Store, provider: str, policies: Policies) -> bool:
    """Whether ``provider``'s circuit breaker is open now (never, when breakers are off)."""
    return policies.circuit.enabled and store.circuits([provider])[provider].is_open


def defer_all(live: Sequence[tuple[Claim, Watch]], now: float) -> list[Commit]:
    """The commits that leave each of ``live`` unchecked and due now (its circuit is open)."""
    return [
        Commit(
            claim,
            deferred(watch.view(), now),
            now,
            previous=watch.state,
            extra={"failing_since": watch.failing_since},
        )
        for claim, watch in live
    ]


def decide_all(
    live: Sequence[tuple[Claim, Watch]],
    seen: Sequence[Seen],
    now: float,
    policies: Policies,
    *,
    hold: bool = False,
) -> list[Commit]:
    """The commit of each checked watch: its next step (pure), and the fields that go with it;
    with ``hold`` (the provider's circuit is open) an outage failure is held, not counted."""
    commits: list[Commit] = []
    for (claim, watch), observed in zip(live, seen, strict=True):
        retry = policies.retry_for(watch)
        if hold and isinstance(observed, Failure) and circuit.outage_signal(observed) is False:
            decision = held(watch.view(), observed, now)
        else:
            decision = decide(watch.view(), observed, now, policies.poll, retry, policies.jitter())
        extra: dict[str, object] = {
            "polls": watch.polls + 1,
            "failing_since": decision.failing_since,
        }
        if isinstance(observed, Failure):
            extra[FIELDS["last_error_kind"]] = observed.kind
        if isinstance(observed, Observation):
            if observed.name:
                extra["name"] = observed.name
            extra.update(observed_fields(observed))
        lease = now + policies.archive_lease_seconds if decision.archive else None
        commits.append(
            Commit(claim, decision, now, previous=watch.state, lease_until=lease, extra=extra)
        )
    return commits


def commit_all(
    store: Store,
    commits: Sequence[Commit],
    abort_on_timeout: set[str],
    send_archive: SendArchive,
    send_abort: SendAbort,
) -> tuple[int, int, int]:
    """Write every commit in one round trip, then send an archive job for each that archives,
    and an abort for each watch in ``abort_on_timeout`` (ids) that timed out (archiving what
    the task left behind, or not: the abort goes at the deadline either way). Returns how many
    were committed, found stale, and archives sent."""
    committed = stale = archives = 0
    for commit, ok in zip(commits, store.commit_many(commits), strict=True):
        if not ok:
            stale += 1
            continue
        committed += 1
        if commit.decision.archive:
            send_archive(commit.claim)
            archives += 1
        if commit.decision.ending is State.TIMED_OUT and commit.claim.watch_id in abort_on_timeout:
            send_abort(commit.claim.watch_id)
    return committed, stale, archives


def _outcome(seen: Seen) -> str:
    if isinstance(seen, Observation):
        return "ok"
    return "retryable_error" if seen.retryable else "permanent_error"


def _log_poll(watch: Watch, seen: Seen, decision: Decision, now: float, duration: float) -> None:
    # a failed check is a warning; one that gave the watch up (it ends in error), an error
    failed = isinstance(seen, Failure)
    emit = log.info if not failed else log.error if decision.state is State.ERROR else log.warning
    emit(
        "poll.done",
        watch_id=watch.id,
        provider=watch.provider,
        remote_id=watch.remote_id,
        outcome="error" if isinstance(seen, Failure) else "ok",
        raw_status=decision.raw_status,
        state=str(decision.state),
        progress=decision.progress,
        error=seen.message if isinstance(seen, Failure) else None,
        next_in_s=None if decision.next_poll_at is None else round(decision.next_poll_at - now, 2),
        duration_ms=round(duration * 1000, 1),
    )
