"""The per-provider circuit breakers (``circuit:<provider>`` hashes; the rules are in
:mod:`taskwarden.circuit`) and the index of failing watches (``failing:<provider>`` sorted
sets, id -> failing since, kept by the commit scripts).

A circuit is changed by an optimistic transaction (WATCH, then MULTI): the pure rule computes
the new state from the one read, and the write is retried if another process changed it in
between, so two workers' batches, or two dispatches, never lose each other's counts or both
take the same probe.

:class:`StoreCircuits` is mixed into :class:`~taskwarden.store.Store`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from redis import Redis

from taskwarden import keys
from taskwarden.circuit import Circuit

T = TypeVar("T")


class StoreCircuits:
    """Circuits and failing watches; a mixin of :class:`~taskwarden.store.Store`, which
    provides ``redis``."""

    redis: Redis

    def circuits(self, providers: Sequence[str]) -> dict[str, Circuit]:
        """The circuit of each of ``providers`` (closed when none was ever stored)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in providers:
            pipe.hgetall(keys.circuit(name))
        return {
            name: Circuit.from_fields(raw)
            for name, raw in zip(providers, pipe.execute(), strict=True)
        }

    def change_circuit(
        self, provider: str, change: Callable[[Circuit], tuple[Circuit, T]]
    ) -> tuple[Circuit, T]:
        """Apply ``change`` (the circuit read -> the circuit to write, and a result) to
        ``provider``'s circuit atomically; returns what it returned for the state it won on."""
        key = keys.circuit(provider)
        outcome: list[tuple[Circuit, T]] = []

        def attempt(pipe: Any) -> None:
            outcome.clear()
            before = Circuit.from_fields(pipe.hgetall(key))
            after, result = change(before)
            outcome.append((after, result))
            if after != before:
                pipe.multi()
                pipe.hset(key, mapping=after.to_fields())

        self.redis.transaction(attempt, key)
        return outcome[0]

    def failing_counts(self, providers: Sequence[str]) -> dict[str, int]:
        """How many live watches of each provider have checks failing now."""
        pipe = self.redis.pipeline(transaction=False)
        for name in providers:
            pipe.zcard(keys.failing(name))
        return dict(zip(providers, (int(n) for n in pipe.execute()), strict=True))
