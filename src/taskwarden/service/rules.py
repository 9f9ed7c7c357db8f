"""What polling, archiving and aborting share: the rules they apply (:class:`Policies`), how a
watch and an error cross the provider port (:func:`target_of`, :func:`failure_of`), and the
shapes of the collaborators they are handed (the senders, the metrics sink)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from taskwarden import metrics
from taskwarden.circuit import NO_CIRCUIT, CircuitPolicy
from taskwarden.config import Settings
from taskwarden.errors import RetryableError, TaskwardenError
from taskwarden.lifecycle import Failure, PollPolicy, RetryPolicy
from taskwarden.models import Watch
from taskwarden.providers.base import Target
from taskwarden.store import Claim

SendArchive = Callable[[Claim], None]  # queue an archive job for a watch under this claim
SendAbort = Callable[[str], None]  # queue an abort of a watch's remote task, by watch id
Record = Callable[[metrics.Batch], None]  # adds what a unit of work saw to the metrics


@dataclass(frozen=True)
class Policies:
    """The rules a worker applies, resolved once per process from :class:`Settings`.

    ``retries`` holds each provider's retry policy (a watch's own ``retry`` goes over it, see
    :meth:`retry_for`); ``jitter`` draws the uniform number in [0, 1) each decision spends;
    ``circuit`` says when a provider's circuit opens (:mod:`taskwarden.circuit`).
    """

    poll: PollPolicy
    retries: Mapping[str, RetryPolicy]
    archive_lease_seconds: float
    poll_concurrency: int
    check_deadline: float | None
    archive_chunk_size: int
    max_output_bytes: int | None
    jitter: Callable[[], float]
    circuit: CircuitPolicy = NO_CIRCUIT

    @classmethod
    def from_settings(
        cls, settings: Settings, providers: Iterable[str], jitter: Callable[[], float] | None = None
    ) -> Policies:
        """The policies of ``settings`` for ``providers`` (by name)."""
        return cls(
            poll=settings.poll_policy(),
            retries={name: settings.retry_policy(name) for name in providers},
            archive_lease_seconds=settings.archive_lease_seconds,
            poll_concurrency=settings.poll_concurrency,
            check_deadline=settings.poll.check_deadline,
            archive_chunk_size=settings.archive_chunk_size,
            max_output_bytes=settings.max_output_bytes,
            jitter=jitter or random.Random().random,
            circuit=settings.circuit.policy(),
        )

    def retry_for(self, watch: Watch) -> RetryPolicy:
        """The retry policy of ``watch``: its provider's, under its own ``retry``."""
        return self.retries[watch.provider].overridden(watch.retry)


def target_of(watch: Watch) -> Target:
    """What a provider is told of ``watch``."""
    return Target(remote_id=watch.remote_id, params=watch.params)


def failure_of(exc: TaskwardenError, message: str | None = None) -> Failure:
    """What a check or an archive run that raised ``exc`` came to (``message``: its wording)."""
    return Failure(
        str(exc) if message is None else message,
        retryable=isinstance(exc, RetryableError),
        retry_after=exc.retry_after if isinstance(exc, RetryableError) else None,
        kind=type(exc).__name__,
    )
