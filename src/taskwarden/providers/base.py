"""The port every platform adapter implements, and the values that cross it.

Core code imports this module, never a platform module. An adapter translates its platform's
words into :class:`~taskwarden.lifecycle.Observation` and its transport failures into the error
tree of :mod:`taskwarden.errors`; nothing above it sees an httpx type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from taskwarden.config import Settings
from taskwarden.lifecycle import Observation
from taskwarden.net import HttpClient


@dataclass(frozen=True)
class Target:
    """What an adapter needs to know of a watch: which remote task, with which options."""

    remote_id: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputRef:
    """One output of a finished remote task.

    ``content`` carries small outputs inline (a JSON description); otherwise the archive opens
    the output with :meth:`Provider.open_output`. ``source`` is recorded in the manifest.
    ``skipped`` (a reason) marks something the task produced that is deliberately not archived
    (a link in a results tarball, an asset out of reach): the manifest lists it under
    ``skipped`` with that reason, and it is never opened.
    """

    name: str
    source: str
    content: bytes | None = None
    content_type: str | None = None
    key: str = ""  # adapter-private handle (a file id, a URL)
    skipped: str | None = None


@dataclass
class OutputStream:
    """An output being downloaded. ``length`` is what the platform announced (checked by the
    archive); ``filename`` overrides the ref's name when the platform names the file."""

    chunks: AsyncIterator[bytes]
    content_type: str | None = None
    length: int | None = None
    filename: str | None = None


class Provider(Protocol):
    """A platform adapter: check status, list outputs, open an output, abort."""

    name: str

    async def fetch_status(self, target: Target) -> Observation:
        """One status check. Raises RetryableError or PermanentError on failure."""
        ...

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """The outputs of a succeeded task, to archive."""
        ...

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output; the context closes the connection."""
        ...

    async def abort(self, target: Target) -> None:
        """Ask the platform to stop the remote task."""
        ...


@runtime_checkable
class Diagnoses(Protocol):
    """An adapter that can also say what a task that did not succeed leaves behind: what an SDK
    user reads on failure (the task document with its errors, logs, a stacktrace).

    Optional: when a watch registered with ``archive="final"`` ends ``failed``, ``cancelled`` (by
    the platform) or ``timed_out``, the archive keeps what :meth:`list_diagnostics` lists, opened
    with :meth:`Provider.open_output` like any output, under the same manifest rules (the
    manifest records the final state). An adapter without it archives nothing on failure (the
    watch's history says so); the archive tells them apart with ``isinstance``.
    """

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        """The diagnostics of a task that ended without success, to archive."""
        ...


class TargetValidator(Protocol):
    """Checks a registration's target before a watch exists, so a malformed one is refused
    (and dead-lettered) instead of ending as an ``error`` watch at its first poll.

    A provider module declares one as a module-level ``validate(settings, target)`` beside its
    factory (a plugin: as a ``validate`` attribute of its factory). It needs only settings, no
    HTTP client and no network: registration runs in processes that build no provider. It
    raises :class:`~taskwarden.errors.PermanentError` (usually ``RequestRejected``) saying what
    is wrong; a provider without one accepts every target (:func:`accept`).
    """

    def __call__(self, settings: Settings, target: Target) -> None: ...


def accept(settings: Settings, target: Target) -> None:
    """The default :class:`TargetValidator`: every target is acceptable."""


class ProviderFactory(Protocol):
    """Builds an adapter once per worker process, given the provider's own HTTP client
    (:data:`taskwarden.net.HttpClient`, an ``httpx.AsyncClient``: its URL guard, rate limit and
    error counting installed, its connection pools shared with the other providers')."""

    def __call__(self, settings: Settings, client: HttpClient) -> Provider: ...
