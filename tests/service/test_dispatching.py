"""Dispatch on a real Redis, without Celery: back-pressure from the poll queue decides how
many due watches are claimed; what is not claimed stays due in Redis."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from taskwarden.circuit import Circuit, CircuitPolicy, observe
from taskwarden.models import Registration
from taskwarden.service.dispatching import dispatch
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
