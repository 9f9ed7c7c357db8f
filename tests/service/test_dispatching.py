"""Dispatch on a real Redis, without Celery: back-pressure from the poll queue decides how
many due watches are claimed; what is not claimed stays due in Redis."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from taskwarden.circuit import Circuit, CircuitPolicy, observe
from taskwarden.models import Registration
from taskwarden.service.dispatching import dispatch, in_flight_cap
from taskwarden.store import Claim, Store

NOW = 1_700_000_000.0
BATCH = 2


class Broker:
    """Stands in for the poll queue: keeps each batch ``dispatch`` sends, in order."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Claim]]] = []

    def send_polls(self, provider: str, claims: Sequence[Claim]) -> None:
        self.batches.append((provider, list(claims)))

    def claimed(self) -> list[str]:
        return [c.watch_id for _, batch in self.batches for c in batch]


def due_watches(store: Store, provider: str, n: int) -> None:
    for i in range(n):
        reg = Registration.model_validate({"provider": provider, "remote_id": f"t{i}"})
        store.register(reg, NOW - 1)


def run(store: Store, broker: Broker, queued: int, max_queued: int | None) -> dict[str, int]:
    result = dispatch(
        store,
        broker.send_polls,
        now=NOW,
        lease_seconds=30,
        batch_size=BATCH,
        max_claims=1000,
        queued_batches=queued,
        max_queued_batches=max_queued,
    )
    assert result.batches == len(broker.batches)
    return result.claimed


@pytest.mark.parametrize(
    ("queued", "max_queued", "claimed", "left_due"),
    [
        (5, 5, 0, 10),  # the poll queue is full: nothing is claimed
        (9, 5, 0, 10),  # over-full (batches sent before the limit was lowered): still nothing
        (3, 5, 4, 6),  # room for 2 batches: 2 * BATCH claimed
        (4, 5, 2, 8),  # room for 1 batch
        (0, 100, 10, 0),  # room for more than is due
        (50, None, 10, 0),  # no limit: the queue's length does not matter
    ],
)
def test_dispatch_claims_only_what_the_poll_queue_has_room_for(
    store: Store, queued: int, max_queued: int | None, claimed: int, left_due: int
) -> None:
    """Dispatch claims at most (max_queued_batches - queued_batches) * batch_size watches and
    leaves the rest due in Redis, unclaimed."""
    due_watches(store, "geobox", 10)
    broker = Broker()
    got = run(store, broker, queued, max_queued)
    assert got == ({"geobox": claimed} if claimed else {})
    assert len(broker.claimed()) == len(set(broker.claimed())) == claimed
    assert all(0 < len(batch) <= BATCH for _, batch in broker.batches)
    assert store.due_count("geobox", NOW) == left_due
    rest = store.claim_due("geobox", NOW, 100, lease_until=NOW + 30)
    assert not {c.watch_id for c in rest} & set(broker.claimed())  # the claimed left the index


def test_the_poll_queue_room_is_shared_by_every_provider(store: Store) -> None:
    """The room left in the poll queue bounds the claims of all providers together."""
    due_watches(store, "geobox", 4)
    due_watches(store, "up42", 4)
    broker = Broker()
    got = run(store, broker, queued=2, max_queued=5)  # room for 3 batches: 6 watches
    assert sum(got.values()) == 6
    assert store.due_count("geobox", NOW) + store.due_count("up42", NOW) == 2
    assert {provider for provider, _ in broker.batches} == set(got)


@pytest.mark.parametrize(
    ("max_in_flight", "lease", "deadline", "rate", "burst", "cap"),
    [
        (1000, 120, 30, None, 1, 1000),  # no rate limit: the cap alone
        (1000, 120, 30, 1.0, 1, 73),  # 1/s over 80 % of the 90 s a lease leaves, + the burst
        (1000, 120, 30, 100.0, 10, 1000),  # a fast limit: the cap is lower
        (1000, 8, 3, 1.0, 1, 5),  # 1/s, 5 s left: 4 + 1
        (1000, 31, 30, 0.1, 1, 1),  # never less than one
    ],
)
def test_in_flight_cap_is_what_the_rate_limit_serves_within_a_lease(
    max_in_flight: int, lease: float, deadline: float, rate: float | None, burst: int, cap: int
) -> None:
    """A rate-limited provider may have in flight what its limit starts while a lease still
    leaves room for a whole check; never more than the general cap, never less than one."""
    assert in_flight_cap(max_in_flight, lease, deadline, rate, burst) == cap


def test_a_provider_at_its_cap_is_not_claimed_and_the_others_are(store: Store) -> None:
    """A provider whose checks in flight reach its cap gets no new claims (its due watches stay
    due) while another is claimed in full; once its checks commit or their leases are reaped,
    it is claimed again."""
    due_watches(store, "hung", 6)
    due_watches(store, "healthy", 2)
    broker = Broker()
    kw = {"lease_seconds": 30, "batch_size": BATCH, "max_claims": 1000, "max_in_flight": 3}
    first = dispatch(store, broker.send_polls, now=NOW, **kw)  # type: ignore[arg-type]
    assert first.claimed == {"hung": 3, "healthy": 2}
    assert store.in_flight("hung", NOW - 30) == 3
    store.register(Registration.model_validate({"provider": "healthy", "remote_id": "new"}), NOW)
    second = dispatch(store, broker.send_polls, now=NOW + 1, **kw)  # type: ignore[arg-type]
    assert second.claimed == {"healthy": 1}
    assert second.at_cap == {"hung": 3}
    assert store.due_count("hung", NOW + 1) == 3
    # the leases run out: reaped, off the in-flight count, claimed again
    third = dispatch(store, broker.send_polls, now=NOW + 32, **kw)  # type: ignore[arg-type]
    assert third.reaped == 6
    assert third.claimed == {"hung": 3, "healthy": 3}


def test_per_provider_caps_override_the_general_one(store: Store) -> None:
    """``in_flight_caps`` sets one provider's cap (a rate-limited one's); the rest keep
    ``max_in_flight``."""
    due_watches(store, "limited", 5)
    due_watches(store, "free", 5)
    broker = Broker()
    result = dispatch(
        store,
        broker.send_polls,
        now=NOW,
        lease_seconds=30,
        batch_size=BATCH,
        max_claims=1000,
        max_in_flight=4,
        in_flight_caps={"limited": 2},
    )
    assert result.claimed == {"limited": 2, "free": 4}


def test_dispatch_lag_counts_checks_held_in_leases(store: Store) -> None:
    """The lag is the longest wait of a watch not yet checked: a due one counts from when it
    fell due, a claimed one not yet committed from its claim, until its check commits or its
    lease is reaped (back on the schedule, due again)."""
    due_watches(store, "geobox", 2)
    assert store.dispatch_lag(NOW + 4) == pytest.approx(5.0)  # due since NOW - 1
    claims = store.claim_due("geobox", NOW + 4, 10, lease_until=NOW + 34)
    assert len(claims) == 2 and store.due_count("geobox") == 0
    assert store.dispatch_lag(NOW + 20) == pytest.approx(16.0)  # held since the claim
    store.reap_leases(NOW + 40)
    assert store.dispatch_lag(NOW + 41) == pytest.approx(1.0)  # due again since the reap


def test_a_provider_holds_no_more_poll_messages_than_its_cap_fills(store: Store) -> None:
    """Watches that fall due one at a time are sent one per message; a provider still holds at
    most ceil(max_in_flight / batch_size) messages, the worker slots a hung platform could
    hold, however few checks each carries."""
    broker = Broker()
    claimed = []
    for tick in range(4):
        reg = Registration.model_validate({"provider": "hung", "remote_id": f"late-{tick}"})
        store.register(reg, NOW + tick)
        result = dispatch(
            store, broker.send_polls, now=NOW + tick, lease_seconds=30, batch_size=BATCH,
            max_claims=1000, max_in_flight=2 * BATCH,
        )  # fmt: skip
        claimed.append(result.claimed.get("hung", 0))
    assert claimed == [1, 1, 0, 0]
    assert len(broker.batches) == 2
    assert store.due_count("hung") == 2


def test_each_tick_sweeps_at_most_its_limit_even_with_a_full_poll_queue(store: Store) -> None:
    """The retention sweep runs every tick, back-pressure or not, removing at most
    ``sweep_limit`` expired watches; a backlog drains over the following ticks."""
    due_watches(store, "geobox", 5)
    for wid in [c.watch_id for c in store.claim_due("geobox", NOW, 100, NOW + 30)]:
        store.cancel(wid, NOW - 100 - store.retention["cancelled"])
    removed = []
    for _ in range(3):
        result = dispatch(store, Broker().send_polls, now=NOW, lease_seconds=30, batch_size=BATCH,
                          max_claims=1000, queued_batches=9, max_queued_batches=5, sweep_limit=2)  # fmt: skip
        removed.append(result.removed)
    assert removed == [2, 2, 1]
    assert store.counts()["cancelled"] == 0


POLICY = CircuitPolicy(failures=3, probe_interval=10.0, ramp=20.0)


def tick(store: Store, broker: Broker, now: float) -> dict[str, int]:
    result = dispatch(store, broker.send_polls, now=now, lease_seconds=1000, batch_size=BATCH,
                      max_claims=1000, circuit=POLICY)  # fmt: skip
    return result.claimed


def test_an_open_circuit_claims_one_probe_per_interval_and_a_ramp_after_closing(
    store: Store,
) -> None:
    """While geobox's circuit is open only one of its watches is claimed per probe interval
    (the others stay due) and another provider is claimed as usual; once closed, the due
    watches come back as a growing share over the ramp."""
    due_watches(store, "geobox", 40)
    due_watches(store, "up42", 3)
    opened = observe(Circuit(), [False] * 3, NOW - 10, POLICY)  # first probe due at NOW
    store.change_circuit("geobox", lambda c: (opened, None))
    broker = Broker()
    assert tick(store, broker, NOW) == {"geobox": 1, "up42": 3}
    assert tick(store, broker, NOW + 1) == {}  # the next probe is a probe interval away
    assert tick(store, broker, NOW + 9.9) == {}
    assert tick(store, broker, NOW + 10) == {"geobox": 1}
    assert store.due_count("geobox") == 38
    assert store.circuits(["geobox"])["geobox"].probes == 2

    closed = observe(store.circuits(["geobox"])["geobox"], [True], NOW + 11, POLICY)
    store.change_circuit("geobox", lambda c: (closed, None))
    assert tick(store, broker, NOW + 11) == {"geobox": BATCH}  # just closed: one batch
    assert tick(store, broker, NOW + 21) == {"geobox": 18}  # half the ramp: half the 36 due
    assert tick(store, broker, NOW + 31) == {"geobox": 18}  # the ramp is over: all the rest


def test_a_provider_at_its_cap_takes_no_probe_and_its_ramp_is_capped(store: Store) -> None:
    """An open circuit's probe waits while the provider's checks in flight fill its cap (the
    probe's turn is not spent: it goes once a check commits or its lease is reaped); after the
    circuit closes, the ramp claims no more than the cap leaves."""
    due_watches(store, "geobox", 40)
    broker = Broker()
    kw = {"lease_seconds": 30, "batch_size": BATCH, "max_claims": 1000, "max_in_flight": 2}
    assert dispatch(store, broker.send_polls, now=NOW, **kw).claimed == {"geobox": 2}  # type: ignore[arg-type]
    opened = observe(Circuit(), [False] * 3, NOW - 10, POLICY)  # first probe due at NOW
    store.change_circuit("geobox", lambda c: (opened, None))
    full = dispatch(store, broker.send_polls, now=NOW + 1, circuit=POLICY, **kw)  # type: ignore[arg-type]
    assert (full.claimed, full.probes, full.held, full.at_cap) == (
        {},
        [],
        ["geobox"],
        {"geobox": 2},
    )
    assert store.circuits(["geobox"])["geobox"].probes == 0

    store.reap_leases(NOW + 31)  # the two checks' leases run out
    freed = dispatch(store, broker.send_polls, now=NOW + 31, circuit=POLICY, **kw)  # type: ignore[arg-type]
    assert (freed.claimed, freed.probes) == ({"geobox": 1}, ["geobox"])
    assert store.circuits(["geobox"])["geobox"].probes == 1

    closed = observe(store.circuits(["geobox"])["geobox"], [True], NOW + 52, POLICY)
    store.change_circuit("geobox", lambda c: (closed, None))
    ramp = dispatch(store, broker.send_polls, now=NOW + 62, circuit=POLICY, **kw)  # type: ignore[arg-type]
    # half the ramp would be 20 of the 39 due; the cap leaves 2 (the probe's lease was reaped)
    assert ramp.reaped == 1 and ramp.claimed == {"geobox": 2}
