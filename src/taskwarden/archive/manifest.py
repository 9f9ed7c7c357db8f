"""The archive: a finished remote task's outputs copied into object storage, and the manifest
that commits them. Storage itself is reached through :mod:`taskwarden.archive.storage`; key
segments are cleaned by :mod:`taskwarden.archive.names`.

The outputs are stored under

    <prefix>/<provider>/<remote id>/<output name>      a name may hold folders: a/b/c.txt
    <prefix>/<provider>/<remote id>/manifest.json      written last

What is archived depends on the final state the run lands on (the manifest's ``final_state``):
a success keeps the task's outputs (``list_outputs``), a failure or a platform's cancellation
what the task left behind (``list_diagnostics``). A time-out is a snapshot of a task that may
still run, and a watch that timed out can be re-armed and archive again, so each time-out's
snapshot has a folder of its own, ``<remote id>/timed_out/<deadline>/`` (:func:`run_folder`),
with its own manifest; the task's own folder stays free for how it really ends.

The manifest is the commit record: an archive without one is incomplete and will be redone, and
one with a manifest is never rewritten (it is created with a "create only" put), so duplicate
deliveries of the same archive job converge on a single archive.

Outputs are streamed in bounded memory (:func:`~taskwarden.archive.storage.write_stream`), hashed
and counted on the way; an output that is not what was announced raises inside the stream, which
aborts its upload and leaves no object.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from taskwarden.archive.names import Names, check_segments, safe_name, safe_path
from taskwarden.archive.storage import (
    MIN_CHUNK_SIZE,
    ArchiveStore,
    create_object,
    read_object,
    read_object_async,
    sweep_staging,
    write_object,
    write_stream,
)
from taskwarden.errors import OutputInvalid, StorageUnavailable
from taskwarden.lifecycle import State
from taskwarden.providers.base import Diagnoses, OutputRef, Provider, Target

MANIFEST_NAME = "manifest.json"
SNAPSHOTS = "timed_out"  # the folder of a task's time-out snapshots, beside its outputs
FEED_SIZE = 1024 * 1024  # bytes handed to obstore per call (see _CheckedStream)


class ManifestOutput(BaseModel):
    """One archived output: where it is and what it should hash to."""

    model_config = ConfigDict(frozen=True)

    name: str
    key: str
    size: int
    sha256: str
    content_type: str | None
    source: str


class ManifestSkipped(BaseModel):
    """Something the task produced that was deliberately not archived, and why (the adapter
    says so with :attr:`~taskwarden.providers.base.OutputRef.skipped`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    reason: str
    source: str | None = None


class Manifest(BaseModel):
    """The record of a completed archive, stored as ``manifest.json`` next to the outputs.
    ``final_status`` is the platform's last word, ``final_state`` the watch's final state the
    archive was taken for (``succeeded``: outputs; ``failed``, ``cancelled``, ``timed_out``:
    what the task left behind). ``skipped`` and ``final_state`` are absent from manifests
    written before they existed; those read as empty and ``succeeded``, all they could be."""

    model_config = ConfigDict(frozen=True)

    version: int = 1
    watch_id: str
    provider: str
    remote_id: str
    final_status: str
    final_state: str = str(State.SUCCEEDED)
    archived_at: datetime
    outputs: list[ManifestOutput]
    skipped: list[ManifestSkipped] = []

    @property
    def total_bytes(self) -> int:
        return sum(output.size for output in self.outputs)


async def archive_outputs(
    archive: ArchiveStore,
    provider: Provider,
    target: Target,
    *,
    watch_id: str,
    provider_name: str,
    final_status: str,
    now: datetime | float,
    chunk_size: int,
    max_bytes: int | None = None,
    final_state: str = State.SUCCEEDED,
    folder: str = "",
) -> Manifest:
    """Stream every output of a finished remote task (or, for another ``final_state``, its
    diagnostics) into the archive and write its manifest.

    ``provider_name`` is the name the watch was registered under (the layout's provider segment);
    ``final_status`` is the platform's own last word, recorded as is; ``folder`` is where under
    the task's folder this archive goes (:func:`run_folder`). If the archive is already
    complete, returns the existing manifest without asking the provider anything. Raises
    StorageUnavailable (retryable) when the store fails, OutputInvalid when an output is not what
    was announced or its name is no safe path, InvalidRegistration for an unsafe remote id,
    ValueError when diagnostics are asked of a provider that lists none, and whatever the
    provider raises.
    """
    if chunk_size < MIN_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at least {MIN_CHUNK_SIZE} bytes (S3's part size)")
    remote_id = target.remote_id
    existing = await read_manifest(archive, provider_name, remote_id, folder)
    if existing is not None:
        return existing

    archived_at = _utc(now)
    names = Names({MANIFEST_NAME} if folder else {MANIFEST_NAME, SNAPSHOTS})
    under = archive.key(provider_name, remote_id, folder)
    await asyncio.to_thread(sweep_staging, archive, under)
    refs = await _listed(provider, target, final_state)
    # every name is checked before the first byte is fetched: a refusal costs no download
    kept = [(ref, safe_path(ref.name)) for ref in refs if ref.skipped is None]
    outputs = [
        await _archive_one(
            archive, provider, target, ref, path, under, names, chunk_size, max_bytes
        )
        for ref, path in kept
    ]
    skipped = [
        ManifestSkipped(name=ref.name, reason=ref.skipped, source=ref.source)
        for ref in refs
        if ref.skipped is not None
    ]

    manifest = Manifest(
        watch_id=watch_id,
        provider=provider_name,
        remote_id=remote_id,
        final_status=final_status,
        final_state=str(final_state),
        archived_at=archived_at,
        outputs=outputs,
        skipped=skipped,
    )
    manifest_at = manifest_key(archive, provider_name, remote_id, folder)
    if await create_object(archive, manifest_at, manifest.model_dump_json(indent=2).encode()):
        return manifest
    # Someone else completed this archive while we were copying; theirs is the record.
    winner = await read_manifest(archive, provider_name, remote_id, folder)
    if winner is None:
        raise StorageUnavailable(f"{manifest_at} exists but cannot be read")
    return winner


def run_folder(final_state: str, deadline: float | None) -> str:
    """Where, under a task's folder, the archive of a run landing on ``final_state`` goes: the
    task's folder itself (""), or for a time-out ``timed_out/<deadline as UTC>``, one folder
    per deadline the watch was armed with (a re-armed watch has a new one)."""
    if final_state != State.TIMED_OUT:
        return ""
    if deadline is None:
        return SNAPSHOTS
    at = datetime.fromtimestamp(deadline, UTC)
    return f"{SNAPSHOTS}/{at:%Y%m%dT%H%M%S}.{at.microsecond // 1000:03d}Z"


async def _listed(provider: Provider, target: Target, final_state: str) -> Sequence[OutputRef]:
    """What to archive for ``final_state``: the outputs of a success, the diagnostics of any
    other end."""
    if final_state == State.SUCCEEDED:
        return await provider.list_outputs(target)
    if not isinstance(provider, Diagnoses):
        raise ValueError(f"provider {provider.name!r} lists no diagnostics")
    return await provider.list_diagnostics(target)


async def _archive_one(
    archive: ArchiveStore,
    provider: Provider,
    target: Target,
    ref: OutputRef,
    path: str,
    under: str,
    names: Names,
    chunk_size: int,
    max_bytes: int | None,
) -> ManifestOutput:
    """Archive one output as ``<under>/<name>``: ``path`` is its safe name, the platform's file
    name replacing its last segment; ``names`` holds the names taken so far."""
    if ref.content is not None:
        _check_size(ref.name, len(ref.content), max_bytes)
        name = names.claim(path)
        key = f"{under}/{name}"
        await write_object(archive, key, ref.content, ref.content_type)
        size, digest, content_type = len(ref.content), hashlib.sha256(ref.content), ref.content_type
    else:
        async with provider.open_output(target, ref) as stream:
            if stream.filename:
                # a file name the platform sent (Content-Disposition) names the file, never
                # its folder: the adapter's path keeps those
                folder, _, _ = path.rpartition("/")
                leaf = safe_name(stream.filename)
                path = f"{folder}/{leaf}" if folder else leaf
            name = names.claim(path)
            key = f"{under}/{name}"
            content_type = stream.content_type or ref.content_type
            if stream.length is not None:
                _check_size(name, stream.length, max_bytes)  # refuse before a byte is fetched
            body = _CheckedStream(stream.chunks, expected=stream.length, key=key, limit=max_bytes)
            await write_stream(
                archive, key, body.pieces(), content_type=content_type, chunk_size=chunk_size
            )
        size, digest = body.size, body.sha256
    return ManifestOutput(
        name=name,
        key=key,
        size=size,
        sha256=digest.hexdigest(),
        content_type=content_type,
        source=ref.source,
    )


class _CheckedStream:
    """An output's chunks, hashed and counted as they pass on their way to the store.

    A length mismatch raises inside the iteration, which aborts the upload it feeds. Pieces are
    regrouped into ``FEED_SIZE`` buffers: HTTP clients yield a few KiB at a time, and each piece
    costs a round trip into obstore's runtime; obstore assembles its own ``chunk_size`` parts,
    so feeding it whole parts would only hold one more part in memory.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], *, expected: int | None, key: str, limit: int | None
    ) -> None:
        self.chunks, self.expected, self.key, self.limit = chunks, expected, key, limit
        self.size = 0
        self.sha256 = hashlib.sha256()

    async def pieces(self) -> AsyncIterator[bytes]:
        buffer = bytearray()
        async for chunk in self.chunks:
            self.size += len(chunk)
            if self.expected is not None and self.size > self.expected:
                raise OutputInvalid(f"{self.key}: more than the announced {self.expected} bytes")
            _check_size(self.key, self.size, self.limit)
            self.sha256.update(chunk)
            buffer += chunk
            if len(buffer) >= FEED_SIZE:
                yield bytes(buffer)
                buffer.clear()
        if self.expected is not None and self.size != self.expected:
            raise OutputInvalid(
                f"{self.key}: got {self.size} of the announced {self.expected} bytes"
            )
        if buffer:
            yield bytes(buffer)


def _check_size(name: str, size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise OutputInvalid(
            f"{name}: {size} bytes is more than the {limit} allowed (TASKWARDEN_MAX_OUTPUT_BYTES)"
        )


def manifest_key(archive: ArchiveStore, provider: str, remote_id: str, folder: str = "") -> str:
    """Where the manifest of ``provider``'s ``remote_id`` lives (refusing ids that would escape),
    in ``folder`` under its task's folder (:func:`run_folder`)."""
    check_segments(provider, remote_id)
    return archive.key(provider, remote_id, folder, MANIFEST_NAME)


async def read_manifest(
    archive: ArchiveStore, provider: str, remote_id: str, folder: str = ""
) -> Manifest | None:
    """The manifest of a completed archive, or None if the archive is absent or incomplete."""
    key = manifest_key(archive, provider, remote_id, folder)
    try:
        data = await read_object_async(archive, key)
    except FileNotFoundError:
        return None
    return _parse_manifest(data, key)


def read_manifest_sync(
    archive: ArchiveStore, provider: str, remote_id: str, folder: str = ""
) -> Manifest | None:
    """Blocking :func:`read_manifest`, for the CLI and tests (no event loop involved)."""
    key = manifest_key(archive, provider, remote_id, folder)
    try:
        data = read_object(archive, key)
    except FileNotFoundError:
        return None
    return _parse_manifest(data, key)


def _parse_manifest(data: bytes, key: str) -> Manifest:
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise OutputInvalid(f"{key} is not a valid taskwarden manifest: {exc}") from exc


def _utc(now: datetime | float) -> datetime:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(UTC)
    return datetime.fromtimestamp(now, UTC)
