"""Dispatch: turn due watches into batched poll jobs.

Celery beat sends ``taskwarden.dispatch`` every ``dispatch_interval`` seconds; whichever worker
takes it runs :func:`dispatch`. Claiming is atomic in Redis (see :mod:`taskwarden.store`), so two
beats, or two dispatches at once, can never hand the same watch to two polls.

Back-pressure: dispatch claims no more than the poll queue can take soon
(``max_queued_batches``). What is not claimed stays in the durable due index in Redis rather
than piling up in the broker, where it would outlive its lease.

Isolation: each provider has at most ``max_in_flight`` checks claimed and not yet committed
(``in_flight_caps`` lowers it per provider), in at most ``ceil(max_in_flight / batch_size)``
poll messages, so a platform that hangs holds that many leases and worker slots, never every
worker. For a rate-limited provider the cap is also what its
limit can serve within a lease (:func:`in_flight_cap`): a claim that would wait for a slot past
its lease is left due instead, so no request is spent on a claim that can no longer commit.

Retention: each tick also removes up to ``sweep_limit`` final watches whose retention has
passed (:meth:`taskwarden.store.Store.sweep`), so a busy warden's Redis stays flat; a backlog
of expired watches drains over the next ticks.

Circuit breakers (:mod:`taskwarden.circuit`): a provider whose circuit is open has none of its
watches claimed (they stay due) but one probe per probe interval; in the ramp after it closes,
a growing share of its due watches.

The cap comes before the circuit: a provider at its cap takes no probe either (the probe
would have no room), and a ramp shares out what the cap leaves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from taskwarden import circuit as circuits
from taskwarden import logs
from taskwarden.circuit import NO_CIRCUIT, CircuitPolicy
from taskwarden.store import Claim, Store

SendPolls = Callable[[str, Sequence[Claim]], None]
CLAIM_CHUNK = 1000
# the share of a lease a rate-limited provider's claims may spend waiting for their slots and
# checking; the rest is for the trip through the poll queue and the commit
RATE_SHARE = 0.8

log = logs.get("taskwarden.scheduler")


@dataclass
class DispatchResult:
    reaped: int = 0
    claimed: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    at_cap: dict[str, int] = field(default_factory=dict)  # provider -> checks it has in flight
    removed: int = 0  # final watches the retention sweep removed
    probes: list[str] = field(default_factory=list)  # providers sent a probe, circuit open
    held: list[str] = field(default_factory=list)  # providers not claimed, circuit open


def in_flight_cap(
    max_in_flight: int,
    lease_seconds: float,
    check_deadline: float,
    rate: float | None = None,
    burst: int = 1,
) -> int:
    """How many checks of one provider may be in flight at once: ``max_in_flight``, and for a
    provider limited to ``rate`` requests a second (``burst`` ahead), what the limit can start
    while a lease leaves room for a whole check (``lease_seconds - check_deadline``, of which
    :data:`RATE_SHARE`). Never less than one."""
    if rate is None:
        return max(1, max_in_flight)
    served = int(rate * (lease_seconds - check_deadline) * RATE_SHARE) + burst
    return max(1, min(max_in_flight, served))


def dispatch(
    store: Store,
    send_polls: SendPolls,
    *,
    now: float,
    lease_seconds: float,
    batch_size: int,
    max_claims: int,
    queued_batches: int = 0,
    max_queued_batches: int | None = None,
    max_in_flight: int | None = None,
    in_flight_caps: Mapping[str, int] | None = None,
    sweep_limit: int = 0,
    circuit: CircuitPolicy | None = None,
) -> DispatchResult:
    """Claim every due watch (within the limits, the in-flight caps and the providers'
    circuits) and send them as poll batches, per provider; then remove up to ``sweep_limit``
    watches whose retention has passed.

    ``max_in_flight`` bounds each provider's checks claimed and not yet committed (None: no
    bound); ``in_flight_caps`` sets that bound per provider (see :func:`in_flight_cap`)."""
    started = time.perf_counter()
    result = DispatchResult(reaped=store.reap_leases(now))
    room = max_claims
    if max_queued_batches is not None:
        room = min(room, max(0, max_queued_batches - queued_batches) * batch_size)
    caps = in_flight_caps or {}
    policy = circuit or NO_CIRCUIT
    names = store.providers()
    states = store.circuits(names) if policy.enabled else {}
    for provider in names:
        budget = room
        cap = caps.get(provider, max_in_flight)
        if cap is not None and budget > 0:
            # claims older than a lease were reaped above; older than two are of watches gone
            store.prune_in_flight(provider, now - 2 * lease_seconds)
            by_claim = store.in_flight_by_claim(provider, now - lease_seconds)
            held = sum(by_claim.values())
            messages = sum(-(-n // batch_size) for n in by_claim.values())
            free = max(0, -(-cap // batch_size) - messages) * batch_size
            budget = min(budget, max(0, cap - held), free)
            if held >= cap or not free:
                result.at_cap[provider] = held
        limit = budget
        state = states.get(provider)
        if state is not None and state.is_open:
            probe = False
            if budget > 0:  # at the cap, or no room: the probe waits for the next tick
                _, probe = store.change_circuit(
                    provider, lambda c: circuits.take_probe(c, now, policy)
                )
            (result.probes if probe else result.held).append(provider)
            limit = min(budget, 1) if probe else 0
        elif state is not None and circuits.ramping(state, now, policy):
            backlog = store.due_count(provider, now)
            limit = circuits.room(state, now, policy, budget, backlog, batch_size)
        taken = 0
        while taken < limit:
            want = min(CLAIM_CHUNK, limit - taken)
            claims = store.claim_due(provider, now, want, lease_until=now + lease_seconds)
            for start in range(0, len(claims), batch_size):
                send_polls(provider, claims[start : start + batch_size])
                result.batches += 1
            taken += len(claims)
            if len(claims) < want:
                break
        if taken:
            result.claimed[provider] = taken
        room -= taken
    if sweep_limit:
        result.removed = store.sweep(now, sweep_limit)
    if result.claimed or result.reaped or result.removed or result.probes or result.at_cap:
        log.info(
            "dispatch.tick",
            claimed=result.claimed,
            batches=result.batches,
            reaped=result.reaped,
            removed=result.removed,
            probes=result.probes,
            circuit_open=result.held + result.probes,
            at_cap=result.at_cap,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
    return result
