"""The per-provider circuit breaker: pure rules, no clock, no Redis.

When a provider's checks keep failing as an outage does (``ProviderUnavailable``: connection
refused or reset, timeouts, 5xx), checking every watch only hammers a platform that is down.
:func:`observe` counts such failures across all of a provider's watches; ``failures`` of them in
a row, none more than ``window`` seconds after the one before, *open* the circuit:

    closed ──(N outage failures in a row)──► open ──(a check is answered)──► closed (ramping)
                                              │ ▲
                                              └─┘ one probe check per probe_interval

While it is open, dispatch claims none of the provider's watches but one probe per
``probe_interval`` (:func:`take_probe`); they stay due, and a failed check is *held*
(:func:`taskwarden.lifecycle.held`): it burns neither the watch's failure count nor its
deadline. A poll batch claimed before the circuit opened checks only its first watch. The
first check the platform answers (any observation, or a permanent error such as 404: the
platform is up) closes the circuit, unless its batch began before the circuit opened; for
``ramp`` seconds after, dispatch claims a growing share of the provider's due watches
(:func:`room`), so the backlog does not land on the platform at once. A 429 or a provider bug
says nothing about an outage and is not counted either way.

The state is kept in Redis by the store (``circuit:<provider>``), changed atomically with
these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace

from taskwarden.lifecycle import Failure, Observation, kind_lineage

CLOSED = "closed"
OPEN = "open"

OUTAGE_KIND = "ProviderUnavailable"
NOT_OUTAGE_KINDS = frozenset({"ResponseTooLarge"})  # the platform answered, too much


@dataclass(frozen=True)
class CircuitPolicy:
    """When a provider's circuit opens, how it probes, and how it ramps up after closing."""

    enabled: bool = True
    failures: int = 10  # outage failures in a row that open the circuit
    window: float = 120.0  # seconds: a failure after a longer quiet starts the count anew
    probe_interval: float = 10.0  # seconds between probe checks while open
    ramp: float = 20.0  # seconds after closing over which claims grow back to the full room


NO_CIRCUIT = CircuitPolicy(enabled=False)  # never opens: every check goes, as before breakers


@dataclass(frozen=True)
class Circuit:
    """One provider's circuit, as stored."""

    state: str = CLOSED
    failures: int = 0  # outage failures in a row
    last_failure_at: float | None = None
    opened_at: float | None = None
    closed_at: float | None = None
    probe_at: float | None = None  # while open: when the next probe may go
    probes: int = 0  # probes sent, ever
    opened: int = 0  # times opened, ever

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    def to_fields(self) -> dict[str, str]:
        """The hash fields (empty string for None)."""
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Circuit:
        def num(key: str) -> float | None:
            value = raw.get(key, "")
            return float(value) if value else None

        return cls(
            state=OPEN if raw.get("state") == OPEN else CLOSED,
            failures=int(raw.get("failures") or 0),
            last_failure_at=num("last_failure_at"),
            opened_at=num("opened_at"),
            closed_at=num("closed_at"),
            probe_at=num("probe_at"),
            probes=int(raw.get("probes") or 0),
            opened=int(raw.get("opened") or 0),
        )


def outage_signal(seen: Observation | Failure) -> bool | None:
    """What one check says of the platform: True it answered, False it looks down, None
    nothing (a 429, a provider bug)."""
    if isinstance(seen, Observation):
        return True
    if not seen.retryable:
        return True  # 401/403/404/400: a platform that refuses is a platform that is up
    lineage = kind_lineage(seen.kind)
    if OUTAGE_KIND in lineage and not lineage & NOT_OUTAGE_KINDS:
        return False
    return None


def observe(
    circuit: Circuit, signals: Iterable[bool | None], now: float, policy: CircuitPolicy
) -> Circuit:
    """``circuit`` after checks of a batch begun at ``now`` whose :func:`outage_signal` are
    ``signals`` (in order)."""
    for signal in signals:
        if signal is None:
            continue
        if signal:
            if circuit.is_open and circuit.opened_at is not None and now < circuit.opened_at:
                continue  # news from a batch that began before the circuit opened: stale
            if circuit.is_open:
                circuit = replace(circuit, state=CLOSED, closed_at=now, probe_at=None)
            circuit = replace(circuit, failures=0)
            continue
        quiet = circuit.last_failure_at is None or now - circuit.last_failure_at > policy.window
        failures = 1 if quiet else circuit.failures + 1
        circuit = replace(circuit, failures=failures, last_failure_at=now)
        if policy.enabled and not circuit.is_open and failures >= policy.failures:
            circuit = replace(
                circuit,
                state=OPEN,
                opened_at=now,
                probe_at=now + policy.probe_interval,
                opened=circuit.opened + 1,
            )
    return circuit


def take_probe(circuit: Circuit, now: float, policy: CircuitPolicy) -> tuple[Circuit, bool]:
    """Whether an open circuit lets one probe check go now, and the circuit after it did."""
    if not circuit.is_open or (circuit.probe_at is not None and now < circuit.probe_at):
        return circuit, False
    taken = replace(circuit, probe_at=now + policy.probe_interval, probes=circuit.probes + 1)
    return taken, True


def ramping(circuit: Circuit, now: float, policy: CircuitPolicy) -> bool:
    """Whether ``circuit`` closed less than ``ramp`` seconds ago."""
    return (
        not circuit.is_open
        and circuit.closed_at is not None
        and policy.ramp > 0
        and now - circuit.closed_at < policy.ramp
    )


def room(
    circuit: Circuit, now: float, policy: CircuitPolicy, full: int, backlog: int, floor: int
) -> int:
    """How many of the provider's watches dispatch may claim now, of ``full``: none while open
    (probes aside: :func:`take_probe`); in the ramp after closing, a share of the ``backlog``
    (its due watches) growing linearly over ``ramp`` seconds, at least ``floor``; else all."""
    if circuit.is_open and policy.enabled:
        return 0
    if not ramping(circuit, now, policy):
        return full
    assert circuit.closed_at is not None  # ramping says so
    share = max(0.0, now - circuit.closed_at) / policy.ramp
    return min(full, max(floor, math.ceil(backlog * share)))
