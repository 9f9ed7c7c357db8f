"""Dispatch: turn due watches into batched poll jobs.

Celery beat sends ``taskwarden.dispatch`` every ``dispatch_interval`` seconds; whichever worker
takes it runs :func:`dispatch`. Claiming is atomic in Redis (see :mod:`taskwarden.store`), so two
beats, or two dispatches at once, can never hand the same watch to two polls.

Back-pressure: dispatch claims no more than the poll queue can take soon
(``max_queued_batches``). What is not claimed stays in the durable due index in Redis rather
than piling up in the broker, where it would outlive its lease.

Retention: each tick also removes up to ``sweep_limit`` final watches whose retention has
passed (:meth:`taskwarden.store.Store.sweep`), so a busy warden's Redis stays flat; a backlog
of expired watches drains over the next ticks.

Circuit breakers (:mod:`taskwarden.circuit`): a provider whose circuit is open has none of its
watches claimed (they stay due) but one probe per probe interval; in the ramp after it closes,
a growing share of its due watches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from taskwarden import circuit as circuits
from taskwarden import logs
from taskwarden.circuit import NO_CIRCUIT, CircuitPolicy
from taskwarden.store import Claim, Store

SendPolls = Callable[[str, Sequence[Claim]], None]
CLAIM_CHUNK = 1000

log = logs.get("taskwarden.scheduler")


@dataclass
class DispatchResult:
    reaped: int = 0
    claimed: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    removed: int = 0  # final watches the retention sweep removed
    probes: list[str] = field(default_factory=list)  # providers sent a probe, circuit open
    held: list[str] = field(default_factory=list)  # providers not claimed, circuit open


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
    sweep_limit: int = 0,
    circuit: CircuitPolicy | None = None,
) -> DispatchResult:
    """Claim every due watch (within the limits and the providers' circuits) and send them as
    poll batches, per provider; then remove up to ``sweep_limit`` watches whose retention has
    passed."""
    started = time.perf_counter()
    result = DispatchResult(reaped=store.reap_leases(now))
    room = max_claims
    if max_queued_batches is not None:
        room = min(room, max(0, max_queued_batches - queued_batches) * batch_size)
    policy = circuit or NO_CIRCUIT
    names = store.providers()
    states = store.circuits(names) if policy.enabled else {}
    for provider in names:
        limit = room
        state = states.get(provider)
        if state is not None and state.is_open:
            _, probe = store.change_circuit(provider, lambda c: circuits.take_probe(c, now, policy))
            (result.probes if probe else result.held).append(provider)
            limit = min(room, 1) if probe else 0
        elif state is not None and circuits.ramping(state, now, policy):
            backlog = store.due_count(provider, now)
            limit = circuits.room(state, now, policy, room, backlog, batch_size)
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
    if result.claimed or result.reaped or result.removed or result.probes:
        log.info(
            "dispatch.tick",
            claimed=result.claimed,
            batches=result.batches,
            reaped=result.reaped,
            removed=result.removed,
            probes=result.probes,
            circuit_open=result.held + result.probes,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
    return result
