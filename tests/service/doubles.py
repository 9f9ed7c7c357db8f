"""What the service tests share: platform doubles implementing the Provider protocol (and one
with ``list_diagnostics`` too), the policies they run under, and registration on the store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from taskwarden import metrics
from taskwarden.errors import RemoteNotFound, TaskwardenError
from taskwarden.lifecycle import ArchiveMode, Observation, PollPolicy, Remote, RetryPolicy
from taskwarden.models import Registration
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.service import Policies
from taskwarden.store import Claim, Store

NOW = 1_700_000_000.0
PROVIDER = "double"
ARCHIVE_LEASE = 900.0
POLICIES = Policies(
    poll=PollPolicy(initial=2.0, backoff=1.5, maximum=60.0),
    retries={PROVIDER: RetryPolicy()},
    archive_lease_seconds=ARCHIVE_LEASE,
    poll_concurrency=4,
    check_deadline=5.0,
    archive_chunk_size=8 * 1024 * 1024,
    max_output_bytes=None,
    jitter=lambda: 0.5,
)


class Platform:
    """A platform double: the test sets each remote task's status and outputs (inline, or a
    failure to raise); every status check and every listing of outputs is recorded."""

    name = PROVIDER

    def __init__(self) -> None:
        self.status: dict[str, Remote] = {}
        self.messages: dict[str, str] = {}  # what the platform says with a status
        self.outputs: dict[str, list[OutputRef] | TaskwardenError] = {}
        self.checked: list[str] = []
        self.listed: list[str] = []

    async def fetch_status(self, target: Target) -> Observation:
        self.checked.append(target.remote_id)
        remote = self.status.get(target.remote_id, Remote.RUNNING)
        message = self.messages.get(target.remote_id)
        return Observation(remote, raw_status=remote.upper(), message=message)

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        self.listed.append(target.remote_id)
        outputs = self.outputs.get(target.remote_id, [])
        if isinstance(outputs, TaskwardenError):
            raise outputs
        return outputs

    @asynccontextmanager
    async def open_output(self, target: Target, ref: OutputRef) -> AsyncIterator[OutputStream]:
        raise RemoteNotFound(f"no output {ref.name}: outputs are inline", provider=self.name)
        yield  # pragma: no cover  (makes this a generator)

    async def abort(self, target: Target) -> None:
        return None


class DiagnosedPlatform(Platform):
    """A platform double that also says what a task that did not succeed left behind."""

    def __init__(self) -> None:
        super().__init__()
        self.diagnostics: dict[str, list[OutputRef]] = {}
        self.diagnosed: list[str] = []

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        self.diagnosed.append(target.remote_id)
        return self.diagnostics.get(target.remote_id, [])


class Sent:
    """What a unit of work sent on: archive jobs, aborts, and metrics batches."""

    def __init__(self) -> None:
        self.archives: list[Claim] = []
        self.aborts: list[str] = []
        self.metrics: list[metrics.Batch] = []


def register(
    store: Store,
    remote_id: str,
    *,
    archive: ArchiveMode = "success",
    timeout: float | None = None,
    abort_on_timeout: bool = False,
    retry: dict[str, object] | None = None,
) -> str:
    """Register a watch of the double's, due since just before ``NOW``; return its id."""
    reg = Registration.model_validate(
        {"provider": PROVIDER, "remote_id": remote_id, "archive": archive, "timeout": timeout,
         "abort_on_timeout": abort_on_timeout, "retry": retry}
    )  # fmt: skip
    watch, _ = store.register(reg, NOW - 1)
    return watch.id
