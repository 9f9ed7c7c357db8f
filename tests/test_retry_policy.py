"""Retry policies: resolved global → provider → watch, and applied by the pure decision.

The end-to-end tests run a real warden against the simulator: a watch's own ``retry`` ends it
after exactly its maximum attempts while a watch of the same provider without one keeps going.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from taskwarden.config.settings import RetryOverride, Settings, load_settings
from taskwarden.errors import ConfigError, InvalidRegistration
from taskwarden.lifecycle import (
    INTERNAL_ERROR,
    Failure,
    Observation,
    PollPolicy,
    Remote,
    RetryPolicy,
    State,
    WatchView,
    decide,
    failure_decision,
    held,
    kind_lineage,
)
from taskwarden.models import Registration, watch_id
from taskwarden.providers import check_settings
from taskwarden.simulator.server import SimulatorServer
from tests.conftest import running_warden, wait_for

POLL = PollPolicy(initial=2.0, backoff=2.0, maximum=10.0)
BASE = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=30.0,
                   maximum_attempts=3)  # fmt: skip
NOW = 1_000.0
R = State.RUNNING
E = State.ERROR


def fail(kind: str | None = "ProviderUnavailable", retry_after: float | None = None) -> Failure:
    return Failure("503", retryable=True, retry_after=retry_after, kind=kind)


@pytest.mark.parametrize(
    ("policy", "watch", "seen", "state", "next_at", "note"),
    [
        # maximum_attempts=0 has no limit on the count: the 1000th failure still retries
        (
            BASE.overridden({"maximum_attempts": 0}),
            WatchView(R, errors=999, failing_since=NOW - 10),
            fail(),
            R,
            NOW + 15,
            None,
        ),
        # maximum_elapsed: a failure that far after the first one gives up, saying how long
        (
            BASE.overridden({"maximum_attempts": 0, "maximum_elapsed": 60.0}),
            WatchView(R, errors=5, failing_since=NOW - 60),
            fail(),
            E,
            None,
            "gave up after 6 failed checks over 60 s: 503",
        ),
        # ...and the last retry is moved up to the bound, to check once more there
        (
            BASE.overridden({"maximum_attempts": 0, "maximum_elapsed": 60.0}),
            WatchView(R, errors=5, failing_since=NOW - 55),
            fail(),
            R,
            NOW + 5,
            None,
        ),
        # ...a Retry-After past the bound too
        (
            BASE.overridden({"maximum_elapsed": 60.0}),
            WatchView(R, errors=1, failing_since=NOW - 30),
            fail("RateLimited", retry_after=120.0),
            R,
            NOW + 30,
            None,
        ),
        # the first failure of a run starts the clock: no bound is hit on it
        (BASE.overridden({"maximum_elapsed": 1.0}), WatchView(R), fail(), R, NOW + 0.5, None),
        # a stale failing_since (errors were reset since) does not count
        (
            BASE.overridden({"maximum_elapsed": 60.0}),
            WatchView(R, errors=0, failing_since=NOW - 1000),
            fail(),
            R,
            NOW + 0.5,
            None,
        ),
        # a non-retryable kind ends the watch at the first failure, naming the kind
        (
            BASE.overridden({"non_retryable": ["RateLimited"]}),
            WatchView(R),
            fail("RateLimited", retry_after=5.0),
            E,
            None,
            "RateLimited is not retried by this watch's retry policy: 503",
        ),
        # kinds match their ancestors: ProviderUnavailable covers ResponseTooLarge
        (
            BASE.overridden({"non_retryable": ["ProviderUnavailable"]}),
            WatchView(R),
            fail("ResponseTooLarge"),
            E,
            None,
            "ResponseTooLarge is not retried by this watch's retry policy: 503",
        ),
        # ...but not their siblings
        (
            BASE.overridden({"non_retryable": ["RateLimited"]}),
            WatchView(R),
            fail("ProviderUnavailable"),
            R,
            NOW + 0.5,
            None,
        ),
        # provider bugs can be made non-retryable too
        (
            BASE.overridden({"non_retryable": [INTERNAL_ERROR]}),
            WatchView(R),
            fail(INTERNAL_ERROR),
            E,
            None,
            "InternalError is not retried by this watch's retry policy: 503",
        ),
        # a non-retryable kind wins over a deadline already passed (error, not timed_out)
        (
            BASE.overridden({"non_retryable": ["RetryableError"]}),
            WatchView(R, deadline=NOW - 1),
            fail(),
            E,
            None,
            "ProviderUnavailable is not retried by this watch's retry policy: 503",
        ),
        # the interval fields: a 10 s first ceiling, jitter 0.5
        (BASE.overridden({"initial_interval": 10.0}), WatchView(R), fail(), R, NOW + 5, None),
    ],
)
def test_policy_rules(
    policy: RetryPolicy,
    watch: WatchView,
    seen: Failure,
    state: State,
    next_at: float | None,
    note: str | None,
) -> None:
    """Each row pins one rule of a retry policy, as decide() applies it."""
    d = decide(watch, seen, NOW, POLL, policy, jitter=0.5)
    assert (d.state, d.next_poll_at, d.note) == (state, next_at, note)


def test_failing_since_is_kept_through_a_run_and_cleared_by_an_observation() -> None:
    """The first failure of a run records its time; later ones keep it; a good check clears it."""
    first = decide(WatchView(R), fail(), NOW, POLL, BASE, 0.5)
    assert (first.errors, first.failing_since) == (1, NOW)
    view = WatchView(R, errors=first.errors, failing_since=first.failing_since)
    second = decide(view, fail(), NOW + 5, POLL, BASE, 0.5)
    assert (second.errors, second.failing_since) == (2, NOW)
    view = WatchView(R, errors=second.errors, failing_since=second.failing_since)
    seen = Observation(Remote.RUNNING, "RUNNING")
    healthy = decide(view, seen, NOW + 9, POLL, BASE, 0.5)
    assert (healthy.errors, healthy.failing_since) == (0, None)


@pytest.mark.parametrize(
    ("kind", "lineage"),
    [
        ("ResponseTooLarge", {"ResponseTooLarge", "ProviderUnavailable", "RetryableError",
                              "TaskwardenError"}),
        ("RateLimited", {"RateLimited", "RetryableError", "TaskwardenError"}),
        (INTERNAL_ERROR, {INTERNAL_ERROR}),
        (None, set()),
    ],
)  # fmt: skip
def test_kind_lineage(kind: str | None, lineage: set[str]) -> None:
    """A kind stands for itself and every ancestor in the error tree."""
    assert kind_lineage(kind) == lineage


# --- the default policy outlasts an outage of hours -------------------------------------------


def test_the_default_policy_waits_out_an_outage_of_hours_and_keeps_checking() -> None:
    """Under the defaults a watch failing every check for 23 hours is still retried (far past
    the 8 attempts that used to end it in two minutes), never waits more than a minute between
    checks, and gives up on the first failure a day after the first."""
    policy = Settings().retry_policy("geobox")
    view, now, checks = WatchView(R), NOW, 0
    while now < NOW + 23 * 3600:
        decision = decide(view, fail(), now, POLL, policy, jitter=1.0)
        assert decision.state is R and decision.next_poll_at is not None
        assert decision.next_poll_at - now <= 60.0
        view = WatchView(R, errors=decision.errors, failing_since=decision.failing_since)
        now, checks = decision.next_poll_at, checks + 1
    assert checks > 1000 and view.failing_since == NOW
    ended = decide(view, fail(), NOW + 24 * 3600, POLL, policy, jitter=1.0)
    assert ended.state is E and ended.note is not None and "over 86400 s" in ended.note


def test_a_give_up_note_holds_foreign_text_as_it_is() -> None:
    """Braces in a platform's or a store's words never reach a formatter (no KeyError)."""
    words = "Generic { store: S3, source: {attempts} }"
    failure = Failure(words, retryable=True, kind="StorageUnavailable")
    out = failure_decision(WatchView(R, errors=2), failure, NOW, BASE, 0.5)
    assert out.state is E and out.note == f"gave up after 3 failed checks: {words}"
    worded = failure_decision(
        WatchView(R, errors=2), failure, NOW, BASE, 0.5, gave_up=lambda n, over: f"{n}: {words}"
    )
    assert worded.note == f"3: {words}"


def test_a_held_failure_burns_nothing_and_shows_the_failure() -> None:
    """While the circuit is open a failed check keeps the watch's count and leaves it due now,
    past its deadline too, with the failure on show."""
    view = WatchView(R, errors=2, failing_since=NOW - 30, deadline=NOW - 1, raw_status="RUNNING")
    out = held(view, fail(), NOW)
    assert (out.state, out.errors, out.next_poll_at) == (R, 2, NOW)
    assert (out.failing_since, out.last_error, out.note) == (NOW - 30, "503", None)
    fresh = held(WatchView(R), fail(), NOW)
    assert (fresh.errors, fresh.failing_since) == (0, NOW)


# --- resolution: global, then provider, then watch --------------------------------------------


@pytest.mark.parametrize(
    ("env", "watch", "expected"),
    [
        # nothing set: the global defaults, bounded by a day of failures rather than a count
        ({}, None, {"maximum_attempts": 0, "maximum_elapsed": 86400.0, "maximum_interval": 60.0,
                    "initial_interval": 1.0, "non_retryable": set()}),
        # the provider's setting replaces the global one, others are inherited
        (
            {"TASKWARDEN_RETRY__MAXIMUM_ATTEMPTS": "5",
             "TASKWARDEN_RETRY__INITIAL_INTERVAL": "2",
             "TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ATTEMPTS": "3"},
            None,
            {"maximum_attempts": 3, "initial_interval": 2.0},
        ),
        # the watch's own fields win over both
        (
            {"TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ATTEMPTS": "3",
             "TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ELAPSED": "600"},
            {"maximum_attempts": 2},
            {"maximum_attempts": 2, "maximum_elapsed": 600.0},
        ),
        # non-retryable kinds as a comma list or JSON; a watch's list replaces the provider's
        (
            {"TASKWARDEN_RETRY__NON_RETRYABLE": "RateLimited, ResponseTooLarge"},
            None,
            {"non_retryable": {"RateLimited", "ResponseTooLarge"}},
        ),
        (
            {"TASKWARDEN_RETRY_POLICIES__GEOBOX__NON_RETRYABLE": '["RateLimited"]'},
            {"non_retryable": []},
            {"non_retryable": set()},
        ),
    ],
)  # fmt: skip
def test_policy_resolution(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    watch: dict[str, Any] | None,
    expected: dict[str, Any],
) -> None:
    """A watch's policy is the global one, under its provider's, under its own overrides."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    policy = settings.retry_policy("geobox", watch)
    got = {name: getattr(policy, name) for name in expected}
    assert got == expected
    # another provider is untouched by geobox's overrides
    assert settings.retry_policy("up42") == settings.retry.policy()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TASKWARDEN_RETRY__NON_RETRYABLE": "Nope"}, "TASKWARDEN_RETRY__NON_RETRYABLE"),
        ({"TASKWARDEN_RETRY_POLICIES__GEOBX__MAXIMUM_ATTEMPTS": "3"},
         "TASKWARDEN_RETRY_POLICIES__GEOBX: unknown provider 'geobx'"),
        ({"TASKWARDEN_RATE_LIMITS__GEOBX__RATE": "3"},
         "TASKWARDEN_RATE_LIMITS__GEOBX: unknown provider 'geobx'"),
        ({"TASKWARDEN_RETRY_POLICIES__GEOBOX__BACKOFF": "3"}, "TASKWARDEN_RETRY_POLICIES__GEOBOX"),
        ({"TASKWARDEN_HTTP__RETRIES": "-1"}, "TASKWARDEN_HTTP__RETRIES"),
        ({"TASKWARDEN_HTTP__MAX_JSON_BYTES": "10"}, "TASKWARDEN_HTTP__MAX_JSON_BYTES"),
    ],
)  # fmt: skip
def test_bad_retry_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    """An unknown kind, provider or field is refused at start-up, naming the variable (provider
    names by the start-up check every entry point runs, which knows the installed providers)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=variable):
        check_settings(load_settings())


@pytest.mark.parametrize(
    ("retry", "reason"),
    [
        ({"maximum_attempts": -1}, "retry.maximum_attempts"),
        ({"non_retryable": ["Whatever"]}, "not a retryable error kind"),
        ({"maximum_interval": 1e12}, "retry.maximum_interval"),
        ({"surprise": 1}, "retry.surprise"),
        ("fast", "retry"),
    ],
)
def test_a_watch_retry_is_validated(retry: object, reason: str) -> None:
    """A registration's ``retry`` is checked like the settings, with the field named."""
    data = {"provider": "geobox", "remote_id": "t1", "retry": retry}
    with pytest.raises(InvalidRegistration, match=reason):
        Registration.parse(data, ["geobox"])


def test_a_watch_keeps_only_the_fields_it_set() -> None:
    """Unset fields of a watch's ``retry`` are not stored: they stay inherited."""
    reg = Registration.parse(
        {"provider": "geobox", "remote_id": "t1", "retry": {"maximum_attempts": 2}}, ["geobox"]
    )
    assert reg.retry == RetryOverride(maximum_attempts=2)
    assert reg.retry.fields() == {"maximum_attempts": 2}
    assert Settings().retry_policy("geobox", reg.retry.fields()).maximum_attempts == 2


# --- end to end --------------------------------------------------------------------------------


def test_a_watch_retry_override_ends_it_after_its_own_attempts(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """Against a platform answering 503, a watch with retry.maximum_attempts=2 ends in error
    after exactly two failed checks, while one without it (same provider) keeps retrying, and
    finishes once the platform recovers."""
    strict = sim.geobox.add_task(file_size=10)
    patient = sim.geobox.add_task(file_size=10)
    faults = [
        sim.inject(kind="status", status=503, task=task.uuid, route="tasks/{uuid}/", count=None)
        for task in (strict, patient)
    ]
    env = {
        "TASKWARDEN_RETRY__MAXIMUM_ATTEMPTS": "1000",
        "TASKWARDEN_HTTP__RETRIES": "1",  # each check is two requests
        "TASKWARDEN_HTTP__RETRY_BACKOFF": "0.01",
    }
    try:
        with running_warden(tmp_path, sim, **env) as warden:
            warden.send_track(
                provider="geobox", remote_id=strict.uuid, retry={"maximum_attempts": 2}
            )
            warden.send_track(provider="geobox", remote_id=patient.uuid)
            ended = warden.wait_final(watch_id("geobox", strict.uuid), timeout=60)
            assert ended.state is State.ERROR
            assert (ended.errors, ended.polls) == (2, 2)
            assert ended.retry == {"maximum_attempts": 2}
            notes = [h["note"] for h in warden.store.history(ended.id)]
            assert any(n and n.startswith("gave up after 2 failed checks") for n in notes)
            gets = sim.stats.count(method="GET", route="tasks/{uuid}/", task=strict.uuid)
            assert gets == 2 * 2  # two checks of two requests each, and not one more

            # the other watch outlives it, still failing and still being checked
            pid = watch_id("geobox", patient.uuid)
            wait_for(lambda: (w := warden.store.get(pid)) is not None and w.errors >= 4, 60)
            still = warden.store.get(pid)
            assert still is not None and not still.state.final
            for fault in faults:
                sim.faults.remove(fault)
            assert warden.wait_final(pid, timeout=60).state is State.SUCCEEDED
    finally:
        for fault in faults:
            sim.faults.remove(fault)


def test_a_provider_policy_applies_to_its_watches(tmp_path: Path, sim: SimulatorServer) -> None:
    """TASKWARDEN_RETRY_POLICIES__GEOBOX__NON_RETRYABLE=RateLimited ends a rate-limited geobox
    watch at its first failed check, whatever the global policy says."""
    task = sim.geobox.add_task(file_size=10)
    fault = sim.inject(kind="rate_limit", retry_after="30", task=task.uuid, count=None)
    env = {"TASKWARDEN_RETRY_POLICIES__GEOBOX__NON_RETRYABLE": "RateLimited"}
    try:
        with running_warden(tmp_path, sim, **env) as warden:
            warden.send_track(provider="geobox", remote_id=task.uuid)
            ended = warden.wait_final(watch_id("geobox", task.uuid), timeout=60)
            assert (ended.state, ended.errors) == (State.ERROR, 1)
            assert ended.last_error is not None and "rate limited" in ended.last_error
    finally:
        sim.faults.remove(fault)


def test_a_stalled_download_fails_by_its_timeout_and_the_archive_is_retried(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """A download that stops sending mid-body fails by the read timeout (it does not hold the
    archive worker), is retried under the retry policy, and the output lands whole."""
    size = 2 * 1024 * 1024
    task = sim.geobox.add_task(file_size=size)
    route = "files/{uuid}/download/"
    fault = sim.inject(kind="stall", keep_bytes=100_000, delay=300, task=task.uuid, route=route)
    try:
        with running_warden(tmp_path, sim, TASKWARDEN_HTTP__READ_TIMEOUT="1") as warden:
            started = time.monotonic()
            warden.send_track(provider="geobox", remote_id=task.uuid)
            watch = warden.wait_final(watch_id("geobox", task.uuid), timeout=60)
            took = time.monotonic() - started
    finally:
        sim.faults.remove(fault)
    assert watch.state is State.SUCCEEDED
    assert took < 60  # nowhere near the 300 s the stall would have held it
    assert watch.last_error is not None and "ReadTimeout" in watch.last_error
    assert sim.stats.count(method="GET", route=route, task=task.uuid) == 2
    assert max(o["size"] for o in watch.outputs) == size
