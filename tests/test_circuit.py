"""The circuit breaker's pure rules (taskwarden.circuit): when it opens, probes, closes and ramps."""

from __future__ import annotations

import pytest

from taskwarden.circuit import (
    CLOSED,
    OPEN,
    Circuit,
    CircuitPolicy,
    observe,
    outage_signal,
    ramping,
    room,
    take_probe,
)
from taskwarden.lifecycle import Failure, Observation, Remote

NOW = 1_000_000.0
P = CircuitPolicy(failures=3, window=60.0, probe_interval=10.0, ramp=30.0)
DOWN = Failure("503", retryable=True, kind="ProviderUnavailable")


@pytest.mark.parametrize(
    ("seen", "signal"),
    [
        (Observation(Remote.RUNNING, "RUNNING"), True),
        (DOWN, False),
        (Failure("timed out", retryable=True, kind="ProviderUnavailable"), False),
        # the platform answered (a 404 or 401 is a platform that is up), or sent too much
        (Failure("big", retryable=True, kind="ResponseTooLarge"), None),
        (Failure("gone", retryable=False, kind="RemoteNotFound"), True),
        # a 429 and a provider bug say nothing of an outage
        (Failure("slow down", retryable=True, kind="RateLimited"), None),
        (Failure("bug", retryable=True, kind="InternalError"), None),
    ],
)
def test_what_a_check_says_of_the_platform(
    seen: Observation | Failure, signal: bool | None
) -> None:
    """Only outage failures (connection, timeout, 5xx) count towards opening."""
    assert outage_signal(seen) is signal


@pytest.mark.parametrize(
    ("before", "signals", "now", "state", "failures"),
    [
        # two failures are not enough, the third in a row opens it
        (Circuit(), [False, False], NOW, CLOSED, 2),
        (Circuit(), [False, False, False], NOW, OPEN, 3),
        # an answer in between starts the count again
        (Circuit(), [False, False, True, False], NOW, CLOSED, 1),
        # signals that say nothing change nothing
        (Circuit(), [False, None, None, False, None, False], NOW, OPEN, 3),
        # a failure after a quiet longer than the window counts from one
        (Circuit(failures=2, last_failure_at=NOW - 61), [False], NOW, CLOSED, 1),
        (Circuit(failures=2, last_failure_at=NOW - 59), [False], NOW, OPEN, 3),
        # open: more failures keep it open; one answer closes it
        (Circuit(state=OPEN, failures=3, last_failure_at=NOW, opened_at=NOW), [False], NOW, OPEN, 4),
        (Circuit(state=OPEN, failures=9, opened_at=NOW - 100), [True], NOW, CLOSED, 0),
        # ...but not an answer from a batch that began before it opened (stale news)
        (Circuit(state=OPEN, failures=9, opened_at=NOW + 1), [True], NOW, OPEN, 9),
    ],
)  # fmt: skip
def test_observe(
    before: Circuit, signals: list[bool | None], now: float, state: str, failures: int
) -> None:
    """N outage failures in a row within the window open the circuit; an answer closes it."""
    after = observe(before, signals, now, P)
    assert (after.state, after.failures) == (state, failures)


def test_opening_schedules_the_first_probe_and_counts_the_opening() -> None:
    """An opening records when, and lets the first probe go one probe interval later."""
    opened = observe(Circuit(), [False] * 3, NOW, P)
    assert (opened.opened_at, opened.probe_at, opened.opened) == (NOW, NOW + 10, 1)
    closed = observe(opened, [True], NOW + 50, P)
    assert (closed.closed_at, closed.probe_at, closed.opened) == (NOW + 50, None, 1)


def test_a_disabled_breaker_never_opens() -> None:
    """With the breaker off, failures are counted (and shown) but nothing opens."""
    after = observe(Circuit(), [False] * 100, NOW, CircuitPolicy(enabled=False, failures=3))
    assert (after.state, after.failures) == (CLOSED, 100)


def test_one_probe_per_probe_interval() -> None:
    """While open, one probe goes when due, and the next one a probe interval later."""
    opened = observe(Circuit(), [False] * 3, NOW, P)
    assert take_probe(opened, NOW + 9.9, P) == (opened, False)
    probing, went = take_probe(opened, NOW + 10, P)
    assert went and (probing.probe_at, probing.probes) == (NOW + 20, 1)
    assert take_probe(probing, NOW + 15, P)[1] is False
    assert take_probe(probing, NOW + 20, P)[1] is True
    assert take_probe(Circuit(), NOW, P)[1] is False  # closed: no probes, every check goes


@pytest.mark.parametrize(
    ("circuit", "now", "expected"),
    [
        (Circuit(), NOW, 1000),  # never opened: all
        (Circuit(state=OPEN, opened_at=NOW - 5), NOW, 0),  # open: none (probes aside)
        (Circuit(closed_at=NOW), NOW, 100),  # just closed: the floor
        (Circuit(closed_at=NOW - 15), NOW, 250),  # half the ramp: half the backlog
        (Circuit(closed_at=NOW - 29), NOW, 484),
        (Circuit(closed_at=NOW - 30), NOW, 1000),  # the ramp is over
    ],
)
def test_room_ramps_after_closing(circuit: Circuit, now: float, expected: int) -> None:
    """After closing, dispatch claims a share of the backlog growing over the ramp."""
    assert room(circuit, now, P, full=1000, backlog=500, floor=100) == expected
    assert ramping(circuit, now, P) is (0 < expected < 1000)


def test_the_stored_fields_round_trip() -> None:
    """A circuit written to its hash reads back the same."""
    circuit = Circuit(OPEN, 4, NOW, NOW - 1, None, NOW + 10, 7, 2)
    assert Circuit.from_fields(circuit.to_fields()) == circuit
    assert Circuit.from_fields({}) == Circuit()
