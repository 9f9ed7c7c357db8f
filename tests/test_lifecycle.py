"""The pure decision table: given a watch, what was seen and the time, what happens next."""

from __future__ import annotations

import pytest

from taskwarden.lifecycle import (
    ArchiveMode,
    Failure,
    Observation,
    PollPolicy,
    Remote,
    RetryPolicy,
    State,
    WatchView,
    archived,
    decide,
)

POLL = PollPolicy(initial=2.0, backoff=2.0, maximum=10.0)
RETRY = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=30.0,
                    maximum_attempts=3)  # fmt: skip
NOW = 1_000.0

P, R = State.PENDING, State.RUNNING


def obs(
    remote: Remote, raw: str = "X", progress: float | None = None, message: str | None = None
) -> Observation:
    return Observation(remote=remote, raw_status=raw, progress=progress, message=message)


@pytest.mark.parametrize(
    ("watch", "seen", "state", "next_at", "note"),
    [
        # first sight of a pending task: check again after the initial interval
        (WatchView(P), obs(Remote.PENDING, "PENDING"), P, NOW + 2, None),
        # nothing changed: the interval grows by the backoff factor
        (WatchView(P, "PENDING", interval=2.0), obs(Remote.PENDING, "PENDING"), P, NOW + 4, None),
        # ...but never beyond the maximum
        (WatchView(P, "PENDING", interval=8.0), obs(Remote.PENDING, "PENDING"), P, NOW + 10, None),
        # a state change resets the interval and is noted
        (
            WatchView(P, "PENDING", interval=8.0),
            obs(Remote.RUNNING, "PROGRESS"),
            R,
            NOW + 2,
            "remote PROGRESS",
        ),
        # the next check never lands after the deadline
        (
            WatchView(R, "PROGRESS", interval=8.0, deadline=NOW + 3),
            obs(Remote.RUNNING, "PROGRESS"),
            R,
            NOW + 3,
            None,
        ),
        # success with archiving on goes to archiving, with no further status checks
        (WatchView(R), obs(Remote.SUCCEEDED, "SUCCESS"), State.ARCHIVING, None, "remote SUCCESS"),
        # what the platform says with its success (a warning, say) reaches the history
        (
            WatchView(R),
            obs(Remote.SUCCEEDED, "complete", message="may be reopened"),
            State.ARCHIVING,
            None,
            "remote complete: may be reopened",
        ),
        # success with archiving off is final at once
        (
            WatchView(R, archive=False),
            obs(Remote.SUCCEEDED, "SUCCESS"),
            State.SUCCEEDED,
            None,
            "remote SUCCESS",
        ),
        # remote failure is final, with the platform's message
        (
            WatchView(R),
            obs(Remote.FAILED, "FAILURE", message="boom"),
            State.FAILED,
            None,
            "remote FAILURE: boom",
        ),
        (WatchView(R), obs(Remote.CANCELLED, "ABORTED"), State.CANCELLED, None, "remote ABORTED"),
        # a final remote word wins even when seen exactly at the deadline
        (
            WatchView(R, deadline=NOW),
            obs(Remote.SUCCEEDED, "SUCCESS"),
            State.ARCHIVING,
            None,
            "remote SUCCESS",
        ),
        # not final at the deadline: timed out
        (
            WatchView(R, "PROGRESS", deadline=NOW),
            obs(Remote.RUNNING, "PROGRESS"),
            State.TIMED_OUT,
            None,
            "deadline passed (last status PROGRESS)",
        ),
        # an unknown word keeps the state, is noted once, and polling goes on
        (
            WatchView(R, "PROGRESS", interval=2.0),
            obs(Remote.UNKNOWN, "WEIRD"),
            R,
            NOW + 4,
            "unknown status word 'WEIRD'; still polling",
        ),
        (WatchView(R, "WEIRD", interval=2.0), obs(Remote.UNKNOWN, "WEIRD"), R, NOW + 4, None),
        # a retryable failure backs off (jitter 0.5 of the 1 s first ceiling)
        (WatchView(R), Failure("503", retryable=True), R, NOW + 0.5, None),
        # Retry-After overrides the computed delay
        (WatchView(R, errors=1), Failure("429", retryable=True, retry_after=7.0), R, NOW + 7, None),
        # the third consecutive failure exhausts maximum_attempts=3
        (
            WatchView(R, errors=2),
            Failure("503", retryable=True),
            State.ERROR,
            None,
            "gave up after 3 failed checks: 503",
        ),
        # a permanent failure ends the watch at once
        (WatchView(P), Failure("not found", retryable=False), State.ERROR, None, "not found"),
        # a retryable failure past the deadline times out instead of retrying
        (
            WatchView(R, "PROGRESS", deadline=NOW - 1),
            Failure("503", retryable=True),
            State.TIMED_OUT,
            None,
            "deadline passed (last status PROGRESS)",
        ),
        # final and archiving watches never move on a status check
        (WatchView(State.SUCCEEDED), obs(Remote.FAILED), State.SUCCEEDED, None, None),
        (WatchView(State.ARCHIVING), obs(Remote.RUNNING), State.ARCHIVING, None, None),
        (WatchView(State.CANCELLED), obs(Remote.SUCCEEDED), State.CANCELLED, None, None),
    ],
)
def test_decide(
    watch: WatchView,
    seen: Observation | Failure,
    state: State,
    next_at: float | None,
    note: str | None,
) -> None:
    """Each row pins one rule of the lifecycle."""
    d = decide(watch, seen, NOW, POLL, RETRY, jitter=0.5)
    assert (d.state, d.next_poll_at, d.note) == (state, next_at, note)


A = State.ARCHIVING
PAST = NOW - 1  # a deadline already passed


@pytest.mark.parametrize(
    ("archive", "deadline", "seen", "state", "outcome"),
    [
        # "final" archives on the way to every end but error, and says which end it lands on
        ("final", None, obs(Remote.SUCCEEDED), A, State.SUCCEEDED),
        ("final", None, obs(Remote.FAILED, message="boom"), A, State.FAILED),
        ("final", None, obs(Remote.CANCELLED), A, State.CANCELLED),
        ("final", PAST, obs(Remote.RUNNING), A, State.TIMED_OUT),
        ("final", PAST, Failure("503", retryable=True), A, State.TIMED_OUT),
        ("final", None, Failure("not found", retryable=False), State.ERROR, None),
        # "success" (the default, and what true means) archives successes only
        ("success", None, obs(Remote.SUCCEEDED), A, State.SUCCEEDED),
        ("success", None, obs(Remote.FAILED, message="boom"), State.FAILED, None),
        ("success", PAST, obs(Remote.RUNNING), State.TIMED_OUT, None),
        # false archives nothing
        (False, None, obs(Remote.SUCCEEDED), State.SUCCEEDED, None),
        (False, None, obs(Remote.CANCELLED), State.CANCELLED, None),
    ],
)
def test_the_archive_mode_decides_which_ends_go_through_archiving(
    archive: ArchiveMode,
    deadline: float | None,
    seen: Observation | Failure,
    state: State,
    outcome: State | None,
) -> None:
    """Each row pins which final states a watch of an archive mode archives on its way to; the
    decision names the final state (``ending``) whether or not it archives first."""
    d = decide(WatchView(R, "X", archive=archive, deadline=deadline), seen, NOW, POLL, RETRY, 0.5)
    assert (d.state, d.outcome, d.next_poll_at) == (state, outcome, None)
    assert d.ending is (outcome or state)


def test_a_failure_archived_keeps_the_platforms_words() -> None:
    """A failure on its way through archiving keeps the note and last error it would have had."""
    view = WatchView(R, archive="final")
    d = decide(view, obs(Remote.FAILED, "FAILURE", message="boom"), NOW, POLL, RETRY, 0.5)
    assert (d.note, d.last_error) == ("remote FAILURE: boom", "boom")


@pytest.mark.parametrize(
    ("outcome", "landing"),
    [(State.FAILED, State.FAILED), (State.TIMED_OUT, State.TIMED_OUT), (None, State.SUCCEEDED)],
)
def test_an_archive_run_lands_on_the_outcome_its_poll_decided(
    outcome: State | None, landing: State
) -> None:
    """The end of an archive run is the final state the watch kept, errors cleared; a watch
    archiving from before outcomes were kept lands on succeeded."""
    d = archived(WatchView(A, errors=2, outcome=outcome), "archived")
    assert (d.state, d.errors, d.note, d.ending) == (landing, 0, "archived", landing)


def test_success_sets_full_progress_and_clears_errors() -> None:
    """A success reports 100% progress and forgets earlier failed checks."""
    d = decide(WatchView(R, progress=0.4, errors=2), obs(Remote.SUCCEEDED), NOW, POLL, RETRY, 0.0)
    assert (d.progress, d.errors) == (1.0, 0)


def test_progress_is_clamped_to_unit_interval() -> None:
    """A platform reporting 130% is recorded as 100%, never more."""
    d = decide(WatchView(R), obs(Remote.RUNNING, progress=1.3), NOW, POLL, RETRY, 0.0)
    assert d.progress == 1.0


def test_failure_counts_and_keeps_last_error() -> None:
    """A failed check increments the error count and records its message."""
    d = decide(WatchView(R, errors=1), Failure("reset", retryable=True), NOW, POLL, RETRY, 1.0)
    assert (d.errors, d.last_error, d.next_poll_at) == (2, "reset", NOW + 2.0)


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "delay"),
    [(1, 1.0, None, 1.0), (2, 1.0, None, 2.0), (4, 1.0, None, 8.0), (10, 1.0, None, 30.0),
     (3, 0.0, None, 0.0), (3, 0.25, None, 1.0), (1000, 1.0, None, 30.0), (2, 0.5, 12.0, 12.0)],
)  # fmt: skip
def test_retry_delay_full_jitter(
    attempt: int, jitter: float, retry_after: float | None, delay: float
) -> None:
    """Delay is a jittered fraction of an exponentially growing, capped ceiling."""
    assert RETRY.delay(attempt, jitter, retry_after) == delay


@pytest.mark.parametrize(
    ("watch", "progress", "next_in", "at", "rate"),
    [
        # first progress seen: the interval resets to initial, no rate yet
        (WatchView(R, "X", interval=8.0), 0.1, 2.0, NOW, None),
        # a watch with progress but no track yet (kept before tracks were) starts one: reset
        (WatchView(R, "X", progress=0.2, interval=8.0), 0.3, 2.0, NOW, None),
        # progress went back (a new phase): reset, and the old rate is not trusted
        (WatchView(R, "X", 0.5, 8.0, progress_at=NOW - 9, progress_rate=0.05), 0.1, 2.0, NOW, None),
        # progress moved with a rate known: aim just past the predicted end (2.5 s + 0.5 s)
        (WatchView(R, "X", 0.5, 2.0, progress_at=NOW - 10), 0.9, 3.0, NOW, 0.04),
        # ...never sooner than initial (the end is 0.4 s away)...
        (WatchView(R, "X", 0.5, 2.0, progress_at=NOW - 10), 0.98, 2.0, NOW, 0.048),
        # ...nor later than maximum (the end is 56 s away)
        (WatchView(R, "X", 0.2, 8.0, progress_at=NOW - 8), 0.3, 10.0, NOW, 0.0125),
        # no move, end 1.5 s ahead: the backoff (4 s) is cut to just past it
        (WatchView(R, "X", 0.9, 2.0, progress_at=NOW - 1, progress_rate=0.04), 0.9, 2.0, NOW - 1,
         0.04),
        # no move, end far ahead: the backoff goes on as without progress
        (WatchView(R, "X", 0.5, 2.0, progress_at=NOW - 1, progress_rate=0.01), 0.5, 4.0, NOW - 1,
         0.01),
        # no move and the predicted end has passed (the estimate was wrong): plain backoff
        (WatchView(R, "X", 0.9, 2.0, progress_at=NOW - 10, progress_rate=0.04), 0.9, 4.0,
         NOW - 10, 0.04),
        # a check that reports no progress: the track is kept, the backoff unchanged
        (WatchView(R, "X", 0.5, 2.0, progress_at=NOW - 1, progress_rate=0.01), None, 4.0, NOW - 1,
         0.01),
    ],
)  # fmt: skip
def test_progress_aware_schedule(
    watch: WatchView, progress: float | None, next_in: float, at: float, rate: float | None
) -> None:
    """Progress that moves resets the interval, a known rate aims the next check just past the
    predicted end within [initial, maximum], and no progress leaves the backoff as it was."""
    d = decide(watch, obs(Remote.RUNNING, "X", progress=progress), NOW, POLL, RETRY, 0.0)
    assert d.next_poll_at == pytest.approx(NOW + next_in)
    assert d.interval == pytest.approx(next_in)
    assert d.progress_at == at
    assert d.progress_rate == (None if rate is None else pytest.approx(rate))


def test_aimed_check_still_bounded_by_deadline() -> None:
    """A check aimed past the predicted end never lands after the watch's deadline."""
    watch = WatchView(R, "X", 0.2, 8.0, deadline=NOW + 5, progress_at=NOW - 8)
    d = decide(watch, obs(Remote.RUNNING, "X", progress=0.3), NOW, POLL, RETRY, 0.0)
    assert d.next_poll_at == NOW + 5


@pytest.mark.parametrize("duration", [30, 120, 240])
def test_linear_task_seen_done_soon_after_its_end(duration: int) -> None:
    """A task whose whole-percent progress rises linearly, checked under the default policy
    (2 s, x1.5, 60 s), is seen done within a few seconds of its end, where a backoff blind to
    progress reached ~51 s intervals and saw a 120 s task done ~40 s late."""
    policy = PollPolicy()
    watch, now, checks = WatchView(P), 0.0, 0
    while True:
        checks += 1
        if now >= duration:
            seen = obs(Remote.SUCCEEDED, "SUCCESS")
        else:
            seen = obs(Remote.RUNNING, "PROGRESS", progress=int(100 * now / duration) / 100)
        d = decide(watch, seen, now, policy, RETRY, 0.0)
        if d.next_poll_at is None:
            break
        watch = WatchView(d.state, d.raw_status, d.progress, d.interval,
                          progress_at=d.progress_at, progress_rate=d.progress_rate)  # fmt: skip
        now = d.next_poll_at
    assert duration <= now < duration + policy.initial * 1.5
    assert checks < duration / policy.initial / 2  # far fewer than checking every initial
