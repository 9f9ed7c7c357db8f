"""The watch lifecycle: states, what a poll observed, and the pure decision of what comes next.

Nothing here reads a clock, a random source or the network: callers pass ``now``, a jitter
draw and the retry policy resolved for the watch (global, then its provider's, then its own
overrides; see ``Settings.retry_policy``), so every rule is a row in a table-driven test.

    pending ──► running ──► archiving ──► succeeded
       │           │            │
       └───────────┴────────────┴──► failed | cancelled | timed_out | error

A watch registered with ``archive="final"`` also goes through ``archiving`` when its task ends
``failed``, ``cancelled`` by the platform or ``timed_out``: the decision names that final state
(:attr:`Decision.outcome`), the watch keeps it, and the archive run lands on it
(:func:`archived`) once what the task left behind is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

from taskwarden import errors

#: what a watch archives: its outputs on success (``"success"``), also what a task that ended
#: otherwise left behind (``"final"``), or nothing (``False``)
ArchiveMode = Literal["success", "final", False]


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
#: the final states an ``archive="final"`` watch archives on its way to (error archives nothing)
DIAGNOSED_STATES = frozenset({State.FAILED, State.CANCELLED, State.TIMED_OUT})


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
    # the platform's own timestamps of the task (unix seconds), where it gives them
    remote_created_at: float | None = None
    remote_started_at: float | None = None
    remote_ended_at: float | None = None
    # small platform facts worth keeping on the watch (JSON-able: an exit code, a failure
    # reason, runtime statistics), shown with it and replaced by each check that reports them
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Failure:
    """A status check that did not produce an observation.

    ``kind`` names the error-tree class it came from ("RateLimited", "ProviderUnavailable"...;
    "InternalError" for a provider bug); a retry policy's ``non_retryable`` kinds match it or
    any of its ancestors.
    """

    message: str
    retryable: bool
    retry_after: float | None = None
    kind: str | None = None


INTERNAL_ERROR = "InternalError"  # the kind of a failure no error-tree class describes


def _error_lineage() -> dict[str, frozenset[str]]:
    lineage: dict[str, frozenset[str]] = {}
    pending: list[type[errors.TaskwardenError]] = [errors.TaskwardenError]
    while pending:
        cls = pending.pop()
        names = {c.__name__ for c in cls.__mro__ if issubclass(c, errors.TaskwardenError)}
        lineage[cls.__name__] = frozenset(names)
        pending.extend(cls.__subclasses__())
    return lineage


_LINEAGE = _error_lineage()

#: the kinds a retry policy may name as ``non_retryable``: every retryable class of the error
#: tree, and the catch-all for provider bugs (permanent kinds are never retried anyway)
RETRYABLE_KINDS = frozenset(
    name for name, names in _LINEAGE.items() if errors.RetryableError.__name__ in names
) | {INTERNAL_ERROR}


def kind_lineage(kind: str | None) -> frozenset[str]:
    """``kind`` and the names of its ancestors in the error tree."""
    if kind is None:
        return frozenset()
    return _LINEAGE.get(kind, frozenset({kind}))


#: how far past a task's predicted end its next check aims, as a share of the policy's
#: ``initial`` interval: the estimate is as good as the progress steps, and a check that lands
#: a little early costs one more check ``initial`` seconds later
AIM_PAST_END = 0.25
#: how far ahead an aim may reach, as a multiple of the time the rate was measured over: a rate
#: from two whole-percent values a few seconds apart is rough, so the first aims stay short and
#: each one measures the rate over a longer span for the next
MAX_EXTRAPOLATION = 4.0


@dataclass(frozen=True)
class PollPolicy:
    """How often a healthy watch is checked: starts at ``initial`` seconds, grows by
    ``backoff`` on every check that changes nothing, never beyond ``maximum``.

    A check whose progress moved resets the interval to ``initial``; once the task's rate of
    progress is known, the next check aims just after its predicted end instead, still within
    ``[initial, maximum]`` (:meth:`toward_end`)."""

    initial: float = 2.0
    backoff: float = 1.5
    maximum: float = 60.0

    def next_interval(self, previous: float | None, changed: bool) -> float:
        if previous is None or changed:
            return self.initial
        return min(self.maximum, max(self.initial, previous * self.backoff))

    def toward_end(
        self, interval: float, end: float | None, now: float, moved: bool, span: float | None
    ) -> float:
        """``interval`` (what :meth:`next_interval` gave) steered by a predicted ``end``: after
        a move, the time to just past the end (at most :data:`MAX_EXTRAPOLATION` times the
        ``span`` the rate was measured over); otherwise never later than that. Bounded by
        ``initial`` and ``maximum``; ``interval`` itself when there is no prediction ahead."""
        if end is None or end < now:
            return interval
        aim = end - now + AIM_PAST_END * self.initial
        if moved and span is not None:
            aim = min(aim, MAX_EXTRAPOLATION * span)
        bounded = min(self.maximum, max(self.initial, aim))
        return bounded if moved else min(interval, bounded)


@dataclass(frozen=True)
class Progress:
    """A task's progress as the watch tracks it: the fraction, when that value was first seen,
    and the rate (fraction per second) between the last two values seen."""

    value: float | None = None
    at: float | None = None
    rate: float | None = None

    def seen(self, value: float | None, now: float) -> tuple[Progress, bool]:
        """This progress after a check that reported ``value`` (None: it said nothing of
        progress) at ``now``, and whether the progress moved."""
        if value is None:
            return self, False
        if self.value is None or self.at is None:
            return Progress(value, now), self.value is None or value != self.value
        if value == self.value:
            return self, False
        if value < self.value or now <= self.at:
            return Progress(value, now), True  # went back (a new phase): no rate to trust
        return Progress(value, now, (value - self.value) / (now - self.at)), True

    def predicted_end(self) -> float | None:
        """When the task reaches 1.0 at the last rate seen, from when this value was first
        seen; None without two values to go by."""
        if self.value is None or self.at is None or not self.rate or self.rate <= 0:
            return None
        return self.at + (1.0 - self.value) / self.rate


DEFAULT_MAXIMUM_ELAPSED = 24 * 3600.0  # a day of failed checks before a watch gives up

#: the note of a watch whose retry policy ran out: (attempts, " over N s" or "") -> text
GaveUp = Callable[[int, str], str]


@dataclass(frozen=True)
class RetryPolicy:
    """How failed checks are retried, in durable-workflow vocabulary, with full jitter.

    The delay before attempt ``n`` (1-based count of consecutive failures) is a uniform draw in
    ``[0, min(maximum_interval, initial_interval * backoff_coefficient ** (n - 1))]``; a
    platform's ``Retry-After`` replaces the computed delay.

    A watch gives up (ends in ``error``) on the ``maximum_attempts``-th consecutive failure
    (0, the default: no limit on the count), or on the first failure ``maximum_elapsed``
    seconds or more after the first failure of the run (default a day, so that a platform
    outage of hours is waited out; None: no limit on the time; the last retry is moved up to
    that bound so that it is checked once more there). ``maximum_interval`` keeps checks
    coming through a long outage. A failure whose kind, or an ancestor of it, is in
    ``non_retryable`` ends the watch at once.
    """

    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float = 60.0
    maximum_attempts: int = 0
    maximum_elapsed: float | None = DEFAULT_MAXIMUM_ELAPSED
    non_retryable: frozenset[str] = frozenset()

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
        return 0 < self.maximum_attempts <= attempt

    def retries(self, kind: str | None) -> bool:
        """Whether a retryable failure of ``kind`` may be retried under this policy."""
        return not self.non_retryable & kind_lineage(kind)

    def overridden(self, overrides: Mapping[str, Any] | None) -> RetryPolicy:
        """This policy with some fields replaced (a provider's or a watch's ``retry``, as
        validated by ``config.RetryOverride``: unset fields are absent or None)."""
        if not overrides:
            return self
        fields = {k: v for k, v in overrides.items() if v is not None}
        if "non_retryable" in fields:
            fields["non_retryable"] = frozenset(fields["non_retryable"])
        return replace(self, **fields)


@dataclass(frozen=True)
class WatchView:
    """The part of a watch that the decision depends on."""

    state: State
    raw_status: str | None = None
    progress: float | None = None
    interval: float | None = None
    errors: int = 0
    deadline: float | None = None
    progress_at: float | None = None  # when ``progress`` was first seen at its value
    progress_rate: float | None = None  # fraction per second between the last two values
    archive: ArchiveMode = "success"
    failing_since: float | None = None  # when the current run of failed checks began
    outcome: State | None = None  # while archiving: the final state the archive run lands on


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
    failing_since: float | None = None
    outcome: State | None = None  # with ``archiving``: the final state the archive lands on
    progress_at: float | None = None
    progress_rate: float | None = None

    @property
    def archive(self) -> bool:
        return self.state is State.ARCHIVING

    @property
    def ending(self) -> State | None:
        """The final state this decision leads to: its state, or the one its archive lands on;
        None while the watch goes on."""
        if self.state.final:
            return self.state
        return self.outcome if self.state is State.ARCHIVING else None

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
            failing_since=watch.failing_since if watch.errors else None,
            progress_at=watch.progress_at,
            progress_rate=watch.progress_rate,
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
        failed = failure_decision(watch, seen, now, retry, jitter)
        if failed.next_poll_at is None:
            return failed  # ended in error: permanent, or the policy gave up
        if past_deadline:
            timed_out = replace(failed, next_poll_at=None, note=_timed_out(watch))
            return _ended(watch, timed_out, State.TIMED_OUT)
        return replace(failed, next_poll_at=_clamp(failed.next_poll_at, watch.deadline))

    seen_now = replace(base, raw_status=seen.raw_status, errors=0, failing_since=None)
    reported = None if seen.progress is None else min(1.0, max(0.0, seen.progress))
    tracked = Progress(watch.progress, watch.progress_at, watch.progress_rate)
    progress, moved = tracked.seen(reported, now)
    seen_now = replace(
        seen_now, progress=progress.value, progress_at=progress.at, progress_rate=progress.rate
    )

    if seen.remote is Remote.SUCCEEDED:
        said = f"remote {seen.raw_status}" + (f": {seen.message}" if seen.message else "")
        return _ended(watch, replace(seen_now, progress=1.0, note=said), State.SUCCEEDED)
    if seen.remote in (Remote.FAILED, Remote.CANCELLED):
        ended = f"remote {seen.raw_status}" + (f": {seen.message}" if seen.message else "")
        failed = replace(seen_now, note=ended, last_error=seen.message)
        return _ended(watch, failed, _REMOTE_TO_STATE[seen.remote])
    if past_deadline:
        return _ended(watch, replace(seen_now, note=_timed_out(watch)), State.TIMED_OUT)

    note: str | None
    state: State
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
    interval = poll.next_interval(watch.interval, changed=state is not watch.state or moved)
    span = None if watch.progress_at is None else now - watch.progress_at
    interval = poll.toward_end(interval, progress.predicted_end(), now, moved, span)
    return replace(
        seen_now,
        state=state,
        interval=interval,
        note=note,
        next_poll_at=_clamp(now + interval, watch.deadline),
    )


def failure_decision(
    watch: WatchView,
    failure: Failure,
    now: float,
    retry: RetryPolicy,
    jitter: float,
    *,
    gave_up: GaveUp | None = None,
) -> Decision:
    """What a failed check (or archive run) of ``watch`` leads to under ``retry``: a retry at
    some time, or ``error`` (permanent, a non-retryable kind, or the policy ran out).

    Deadlines are not considered here; :func:`decide` applies them. ``gave_up`` words the note
    when the policy ran out (by default "gave up after N failed checks: <message>"); it is a
    function, never a template, so that no foreign text is ever formatted.
    """
    base = Decision.unchanged(watch)
    attempt = watch.errors + 1
    since = base.failing_since if base.failing_since is not None else now
    failed = replace(base, errors=attempt, last_error=failure.message, failing_since=since)
    if not failure.retryable:
        return replace(failed, state=State.ERROR, note=failure.message)
    if not retry.retries(failure.kind):
        said = f"{failure.kind} is not retried by this watch's retry policy: {failure.message}"
        return replace(failed, state=State.ERROR, note=said)
    elapsed = now - since
    over_time = retry.maximum_elapsed is not None and elapsed >= retry.maximum_elapsed
    if retry.exhausted(attempt) or over_time:
        over = f" over {elapsed:.0f} s" if elapsed > 0 else ""
        if gave_up is None:
            note = f"gave up after {attempt} failed checks{over}: {failure.message}"
        else:
            note = gave_up(attempt, over)
        return replace(failed, state=State.ERROR, note=note)
    at = now + retry.delay(attempt, jitter, failure.retry_after)
    if retry.maximum_elapsed is not None:
        at = min(at, since + retry.maximum_elapsed)
    return replace(failed, next_poll_at=at)


def held(watch: WatchView, failure: Failure, now: float) -> Decision:
    """A failed check of ``watch`` while its provider's circuit is open (the platform is down
    for everyone): not counted against the watch (neither ``errors`` nor its deadline move),
    the failure shown (``failing_since``, ``last_error``), and the watch left due, so that it
    is checked as soon as the circuit lets it (see :mod:`taskwarden.circuit`)."""
    since = watch.failing_since if watch.failing_since is not None else now
    return replace(
        Decision.unchanged(watch), last_error=failure.message, failing_since=since, next_poll_at=now
    )


def deferred(watch: WatchView, now: float) -> Decision:
    """A claimed check of ``watch`` not sent, its provider's circuit being open: nothing about
    the watch changes, and it is due again at once (see :mod:`taskwarden.circuit`)."""
    return replace(Decision.unchanged(watch), failing_since=watch.failing_since, next_poll_at=now)


def archives(mode: ArchiveMode, state: State) -> bool:
    """Whether a watch of archive ``mode`` archives on its way to the final ``state``."""
    if state is State.SUCCEEDED:
        return mode is not False
    return mode == "final" and state in DIAGNOSED_STATES


def archived(watch: WatchView, note: str) -> Decision:
    """What a completed archive run of ``watch`` comes to: the final state its decision named
    (``succeeded`` for a watch from before outcomes were kept), errors cleared."""
    landing = watch.outcome if watch.outcome is not None else State.SUCCEEDED
    return replace(Decision.unchanged(watch), state=landing, errors=0, note=note)


def _ended(watch: WatchView, decision: Decision, state: State) -> Decision:
    """``decision`` ending in ``state``, through ``archiving`` when the watch archives there."""
    if archives(watch.archive, state):
        return replace(decision, state=State.ARCHIVING, outcome=state)
    return replace(decision, state=state)


def _clamp(at: float, deadline: float | None) -> float:
    return at if deadline is None else min(at, deadline)


def _timed_out(watch: WatchView) -> str:
    last = f" (last status {watch.raw_status})" if watch.raw_status else ""
    return "deadline passed" + last
