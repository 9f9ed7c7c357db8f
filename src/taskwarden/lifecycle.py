"""The watch lifecycle: states, what a poll observed, and the pure decision of what comes next.

Nothing here reads a clock, a random source or the network: callers pass ``now`` and a jitter
draw in, so every rule is a row in a table-driven test.

    pending ──► running ──► archiving ──► succeeded
       │           │            │
       └───────────┴────────────┴──► failed | cancelled | timed_out | error
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    """Where a watch is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    ARCHIVING = "archiving"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    ERROR = "error"  # the warden could not monitor it: not found, rejected, retries exhausted

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {State.SUCCEEDED, State.FAILED, State.CANCELLED, State.TIMED_OUT, State.ERROR}
)


class Remote(StrEnum):
    """A platform's status word, mapped onto one canonical vocabulary by its provider."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # a word the provider does not know: recorded raw, polling goes on


@dataclass(frozen=True)
class Observation:
    """What one status check saw. ``progress`` is a fraction in [0, 1] when the platform says."""

    remote: Remote
    raw_status: str
    progress: float | None = None
    message: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Failure:
    """A status check that did not produce an observation."""

    message: str
    retryable: bool
    retry_after: float | None = None


@dataclass(frozen=True)
class PollPolicy:
    """How often a healthy watch is checked: starts at ``initial`` seconds, grows by
    ``backoff`` on every check that changes nothing, never beyond ``maximum``."""

    initial: float = 2.0
    backoff: float = 1.5
    maximum: float = 60.0

    def next_interval(self, previous: float | None, changed: bool) -> float:
        if previous is None or changed:
            return self.initial
        return min(self.maximum, max(self.initial, previous * self.backoff))


@dataclass(frozen=True)
class RetryPolicy:
    """How failed checks are retried, in durable-workflow vocabulary, with full jitter.

    The delay before attempt ``n`` (1-based count of consecutive failures) is a uniform draw in
    ``[0, min(maximum_interval, initial_interval * backoff_coefficient ** (n - 1))]``; a
    platform's ``Retry-After`` replaces the computed delay.
    """

    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float = 60.0
    maximum_attempts: int = 8

    def delay(self, attempt: int, jitter: float, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        exponent = max(0, attempt - 1)
        # cap the exponent so huge attempt counts cannot overflow a float
        ceiling = min(
            self.maximum_interval,
            self.initial_interval * self.backoff_coefficient ** min(exponent, 64),
        )
        return ceiling * min(max(jitter, 0.0), 1.0)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.maximum_attempts


@dataclass(frozen=True)
class WatchView:
    """The part of a watch that the decision depends on."""

    state: State
    raw_status: str | None = None
    progress: float | None = None
    interval: float | None = None
    errors: int = 0
    deadline: float | None = None
    archive: bool = True


@dataclass(frozen=True)
class Decision:
    """What to record after a check, and when (if ever) to check again."""

    state: State
    raw_status: str | None
    progress: float | None
    interval: float | None
    errors: int
    next_poll_at: float | None
    note: str | None = None  # a line for the watch's history; None when nothing worth saying
    last_error: str | None = None

    @property
    def archive(self) -> bool:
        return self.state is State.ARCHIVING

    @classmethod
    def unchanged(cls, watch: WatchView) -> Decision:
        """Record nothing new and schedule no check: the starting point of every decision."""
        return cls(
            state=watch.state,
            raw_status=watch.raw_status,
            progress=watch.progress,
            interval=watch.interval,
            errors=watch.errors,
            next_poll_at=None,
        )


_REMOTE_TO_STATE = {
    Remote.PENDING: State.PENDING,
    Remote.RUNNING: State.RUNNING,
    Remote.FAILED: State.FAILED,
    Remote.CANCELLED: State.CANCELLED,
}


def decide(
    watch: WatchView,
    seen: Observation | Failure,
    now: float,
    poll: PollPolicy,
    retry: RetryPolicy,
    jitter: float,
) -> Decision:
    """Given a watch, what its last check saw and the time, say what happens next."""
    base = Decision.unchanged(watch)
    if watch.state.final or watch.state is State.ARCHIVING:
        return base  # nothing a status check says can move a watch back

    past_deadline = watch.deadline is not None and now >= watch.deadline

    if isinstance(seen, Failure):
        attempt = watch.errors + 1
        failed = replace(base, errors=attempt, last_error=seen.message)
        if not seen.retryable:
            return replace(failed, state=State.ERROR, note=seen.message)
        if retry.exhausted(attempt):
            gave_up = f"gave up after {attempt} failed checks: {seen.message}"
            return replace(failed, state=State.ERROR, note=gave_up)
        if past_deadline:
            return replace(failed, state=State.TIMED_OUT, note=_timed_out(watch))
        delay = retry.delay(attempt, jitter, seen.retry_after)
        return replace(failed, next_poll_at=_clamp(now + delay, watch.deadline))

    seen_now = replace(base, raw_status=seen.raw_status, errors=0)
    if seen.progress is not None:
        seen_now = replace(seen_now, progress=min(1.0, max(0.0, seen.progress)))

    if seen.remote is Remote.SUCCEEDED:
        state = State.ARCHIVING if watch.archive else State.SUCCEEDED
        said = f"remote {seen.raw_status}" + (f": {seen.message}" if seen.message else "")
        return replace(seen_now, state=state, progress=1.0, note=said)
    if seen.remote in (Remote.FAILED, Remote.CANCELLED):
        ended = f"remote {seen.raw_status}" + (f": {seen.message}" if seen.message else "")
        return replace(
            seen_now, state=_REMOTE_TO_STATE[seen.remote], note=ended, last_error=seen.message
        )
    if past_deadline:
        return replace(seen_now, state=State.TIMED_OUT, note=_timed_out(watch))

    note: str | None
    if seen.remote is Remote.UNKNOWN:
        state = watch.state
        note = (
            f"unknown status word {seen.raw_status!r}; still polling"
            if seen.raw_status != watch.raw_status
            else None
        )
    else:
        state = _REMOTE_TO_STATE[seen.remote]
        note = f"remote {seen.raw_status}" if state is not watch.state else None
    interval = poll.next_interval(watch.interval, changed=state is not watch.state)
    return replace(
        seen_now,
        state=state,
        interval=interval,
        note=note,
        next_poll_at=_clamp(now + interval, watch.deadline),
    )


def _clamp(at: float, deadline: float | None) -> float:
    return at if deadline is None else min(at, deadline)


def _timed_out(watch: WatchView) -> str:
    last = f" (last status {watch.raw_status})" if watch.raw_status else ""
    return "deadline passed" + last
