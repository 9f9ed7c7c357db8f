"""The archive: the only module that talks to object storage.

A finished remote task's outputs are streamed into the store under

    <prefix>/<provider>/<remote id>/<output name>
    <prefix>/<provider>/<remote id>/manifest.json      written last

The manifest is the commit record: an archive without one is incomplete and will be redone, and
one with a manifest is never rewritten (it is created with a "create only" put), so duplicate
deliveries of the same archive job converge on a single archive.

Outputs are uploaded as multipart uploads from a bounded stream. That matters: a ``mode="create"``
put of a stream buffers the whole object in memory for a single PUT, whereas multipart holds a few
``chunk_size`` parts at most, and makes the object visible only on completion (S3 completes the
upload, the local store renames a staging file). An exception raised from the chunk iterator, such
as a length mismatch, therefore aborts the upload and leaves no object.

obstore's async calls leave work in its Rust runtime that still touches Python just after the
awaited call returns; a process that exits right then can abort with SIGABRT (measured: about one
exit in five, against S3 and the local store alike). Whoever owns the event loop must
``await settle()`` before closing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError
from obstore.store import LocalStore, MemoryStore, S3Store
from pydantic import BaseModel, ConfigDict, ValidationError

from taskwarden.config import Settings
from taskwarden.errors import ConfigError, InvalidRegistration, OutputInvalid, StorageUnavailable
from taskwarden.providers.base import OutputRef, Provider, Target, validate_remote_id

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig, S3Config

MANIFEST_NAME = "manifest.json"
_STAGING = re.compile(r"#\d+$")  # the local store's staging files: <key>#<n>
MIN_CHUNK_SIZE = 5 * 1024 * 1024  # S3's smallest multipart part (all but the last)
UPLOAD_CONCURRENCY = 2  # parts in flight per output: bounds memory at a few chunks
FEED_SIZE = 1024 * 1024  # bytes handed to obstore per call (see _CheckedStream)
SETTLE_SECONDS = 0.1
MAX_NAME_CHARS = 200  # under the 255-byte file name limit for most non-ASCII names too

# Transport-level retries only; the archive job itself is retried by the worker's policy, so a
# long in-process retry loop here would only hold a worker slot hostage.
_RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
}


class ManifestOutput(BaseModel):
    """One archived output: where it is and what it should hash to."""

    model_config = ConfigDict(frozen=True)

    name: str
    key: str
    size: int
    sha256: str
    content_type: str | None
    source: str


class Manifest(BaseModel):
    """The record of a completed archive, stored as ``manifest.json`` next to the outputs."""

    model_config = ConfigDict(frozen=True)

    version: int = 1
    watch_id: str
    provider: str
    remote_id: str
    final_status: str
    archived_at: datetime
    outputs: list[ManifestOutput]

    @property
    def total_bytes(self) -> int:
        return sum(output.size for output in self.outputs)


@dataclass(frozen=True)
class ArchiveStore:
    """An open archive: the obstore store and the key prefix all of taskwarden's keys live under.

    Keys (and the ``key`` fields of a manifest) are relative to the store's root: the bucket for
    ``s3://``, the directory for ``file://``, the URL's path for ``gs://`` and ``az://``.
    """

    store: ObjectStore
    prefix: str = ""
    local_root: Path | None = None  # the directory of a ``file://`` archive

    def key(self, *segments: str) -> str:
        return "/".join(part for part in (self.prefix, *segments) if part)


@dataclass(frozen=True)
class StoredObject:
    """An object listed from the archive."""

    key: str
    size: int


def open_store(settings: Settings) -> ArchiveStore:
    """Open the archive named by ``settings.resolved_archive_url``; built once per process."""
    url = settings.resolved_archive_url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"TASKWARDEN_ARCHIVE_URL: file:// URLs must be local (got {url!r})")
        root = Path(unquote(parts.path))
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"TASKWARDEN_ARCHIVE_URL: cannot create {root}: {exc}") from exc
        return ArchiveStore(LocalStore(root), local_root=root)
    if scheme == "memory":
        return ArchiveStore(MemoryStore(), _prefix(parts.netloc + parts.path, url))
    if scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"TASKWARDEN_ARCHIVE_URL: s3:// URL needs a bucket (got {url!r})")
        return ArchiveStore(_s3_store(parts.netloc, settings), _prefix(parts.path, url))
    if scheme in ("gs", "az"):
        # Credentials come from the environment (GOOGLE_*, AZURE_*), read by obstore itself;
        # the URL's path becomes the store's own prefix.
        try:
            store = obstore.store.from_url(url, retry_config=_RETRY)
        except (BaseError, ValueError) as exc:
            raise ConfigError(f"TASKWARDEN_ARCHIVE_URL: cannot open {url!r}: {exc}") from exc
        return ArchiveStore(store)
    raise ConfigError(
        f"TASKWARDEN_ARCHIVE_URL: unsupported scheme {parts.scheme!r};"
        " use file://, memory://, s3://, gs:// or az://"
    )


def _prefix(path: str, url: str) -> str:
    segments = [segment for segment in unquote(path).split("/") if segment]
    if any(seg in (".", "..") or any(map(_is_control, seg)) for seg in segments):
        raise ConfigError(f"TASKWARDEN_ARCHIVE_URL: invalid key prefix in {url!r}")
    return "/".join(segments)


def _s3_store(bucket: str, settings: Settings) -> S3Store:
    s3 = settings.s3
    config: S3Config = {"region": s3.region}
    if s3.endpoint_url:
        if s3.endpoint_url.startswith("http://") and not s3.allow_http:
            raise ConfigError(
                "TASKWARDEN_S3__ENDPOINT_URL is plain http: set TASKWARDEN_S3__ALLOW_HTTP=true"
                " to allow it (test servers only)"
            )
        config["endpoint"] = s3.endpoint_url
    if (s3.access_key_id is None) != (s3.secret_access_key is None):
        raise ConfigError(
            "set both TASKWARDEN_S3__ACCESS_KEY_ID and TASKWARDEN_S3__SECRET_ACCESS_KEY, or neither"
        )
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        config["access_key_id"] = s3.access_key_id.get_secret_value()
        config["secret_access_key"] = s3.secret_access_key.get_secret_value()
    client: ClientConfig = {"allow_http": s3.allow_http}
    return S3Store(bucket, config=config, client_options=client, retry_config=_RETRY)


async def settle(seconds: float = SETTLE_SECONDS) -> None:
    """Let obstore's runtime finish its callbacks; await before closing an event loop that ran
    archive calls, or the process may abort with SIGABRT at exit."""
    await asyncio.sleep(seconds)


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
) -> Manifest:
    """Stream every output of a finished remote task into the archive and write its manifest.

    ``provider_name`` is the name the watch was registered under (the layout's provider segment);
    ``final_status`` is the platform's own last word, recorded as is. If the archive is already
    complete, returns the existing manifest without asking the provider anything. Raises
    StorageUnavailable (retryable) when the store fails, OutputInvalid when an output is not what
    was announced, InvalidRegistration for an unsafe remote id, and whatever the provider raises.
    """
    if chunk_size < MIN_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at least {MIN_CHUNK_SIZE} bytes (S3's part size)")
    remote_id = target.remote_id
    existing = await read_manifest(archive, provider_name, remote_id)
    if existing is not None:
        return existing

    archived_at = _utc(now)
    used = {MANIFEST_NAME}
    under = archive.key(provider_name, remote_id)
    await asyncio.to_thread(sweep_staging, archive, under)
    outputs = [
        await _archive_one(archive, provider, target, ref, under, used, chunk_size, max_bytes)
        for ref in await provider.list_outputs(target)
    ]

    manifest = Manifest(
        watch_id=watch_id,
        provider=provider_name,
        remote_id=remote_id,
        final_status=final_status,
        archived_at=archived_at,
        outputs=outputs,
    )
    manifest_at = manifest_key(archive, provider_name, remote_id)
    try:
        with _storage_errors("write", manifest_at):
            await obstore.put_async(
                archive.store,
                manifest_at,
                manifest.model_dump_json(indent=2).encode(),
                mode="create",
            )
    except AlreadyExistsError:
        # Someone else completed this archive while we were copying; theirs is the record.
        winner = await read_manifest(archive, provider_name, remote_id)
        if winner is None:
            raise StorageUnavailable(f"{manifest_at} exists but cannot be read") from None
        return winner
    return manifest


async def _archive_one(
    archive: ArchiveStore,
    provider: Provider,
    target: Target,
    ref: OutputRef,
    under: str,
    used: set[str],
    chunk_size: int,
    max_bytes: int | None,
) -> ManifestOutput:
    """Archive one output as ``<under>/<name>``; ``used`` holds the names taken so far."""
    if ref.content is not None:
        _check_size(ref.name, len(ref.content), max_bytes)
        name = unique_name(safe_name(ref.name), used)
        key = f"{under}/{name}"
        attributes = _attributes(archive, ref.content_type)
        with _storage_errors("write", key):
            await obstore.put_async(archive.store, key, ref.content, attributes=attributes)
        size, digest, content_type = len(ref.content), hashlib.sha256(ref.content), ref.content_type
    else:
        async with provider.open_output(target, ref) as stream:
            name = unique_name(safe_name(stream.filename or ref.name), used)
            key = f"{under}/{name}"
            content_type = stream.content_type or ref.content_type
            if stream.length is not None:
                _check_size(name, stream.length, max_bytes)  # refuse before a byte is fetched
            body = _CheckedStream(stream.chunks, expected=stream.length, key=key, limit=max_bytes)
            with _storage_errors("write", key):
                # Multipart, never mode="create": see the module docstring.
                await obstore.put_async(
                    archive.store,
                    key,
                    body.pieces(),
                    attributes=_attributes(archive, content_type),
                    use_multipart=True,
                    chunk_size=chunk_size,
                    max_concurrency=UPLOAD_CONCURRENCY,
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


def sweep_staging(archive: ArchiveStore, under: str) -> int:
    """Delete what killed uploads left under ``under`` in a ``file://`` archive; return how many.

    The local store writes a multipart upload to a staging file ``<key>#<n>`` and renames it on
    completion; a process killed in between leaves the staging file, which obstore never lists
    and nobody else would remove. Output names never hold a ``#`` (:func:`safe_name`), so those
    files are all leftovers. Only safe while no other upload under ``under`` runs: the caller
    holds the watch's archive run. (On S3 a killed upload is an incomplete multipart upload,
    invisible and billed until a bucket lifecycle rule aborts it: see the README.)
    """
    if archive.local_root is None:
        return 0
    removed = 0
    for path in (archive.local_root / under).rglob("*#*"):
        if _STAGING.search(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


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


def manifest_key(archive: ArchiveStore, provider: str, remote_id: str) -> str:
    """Where the manifest of ``provider``'s ``remote_id`` lives (refusing ids that would escape)."""
    _check_segments(provider, remote_id)
    return archive.key(provider, remote_id, MANIFEST_NAME)


async def read_manifest(archive: ArchiveStore, provider: str, remote_id: str) -> Manifest | None:
    """The manifest of a completed archive, or None if the archive is absent or incomplete."""
    key = manifest_key(archive, provider, remote_id)
    try:
        with _storage_errors("read", key):
            result = await obstore.get_async(archive.store, key)
            data = await result.bytes_async()
    except FileNotFoundError:
        return None
    return _parse_manifest(bytes(data), key)


def read_manifest_sync(archive: ArchiveStore, provider: str, remote_id: str) -> Manifest | None:
    """Blocking :func:`read_manifest`, for the CLI and tests (no event loop involved)."""
    key = manifest_key(archive, provider, remote_id)
    try:
        data = read_object(archive, key)
    except FileNotFoundError:
        return None
    return _parse_manifest(data, key)


def list_objects(archive: ArchiveStore, *segments: str) -> list[StoredObject]:
    """Every object under the prefix (and optional ``provider``, ``remote_id`` segments),
    sorted by key. Blocking; for the CLI and tests."""
    under = archive.key(*segments)
    with _storage_errors("list", under or "/"):
        batches = obstore.list(archive.store, under or None).collect()
    return sorted(
        (StoredObject(key=meta["path"], size=meta["size"]) for meta in batches),
        key=lambda item: item.key,
    )


def read_object(archive: ArchiveStore, key: str) -> bytes:
    """The bytes of one object (raises FileNotFoundError if absent). Blocking; small objects."""
    with _storage_errors("read", key):
        return bytes(obstore.get(archive.store, key).bytes())


def _parse_manifest(data: bytes, key: str) -> Manifest:
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise OutputInvalid(f"{key} is not a valid taskwarden manifest: {exc}") from exc


_SEPARATORS = re.compile(r"[/\\]")


def safe_name(name: str) -> str:
    """A single, harmless key segment for an output name from a platform.

    Keeps the last path component only, drops control characters and leading dots, replaces
    ``#`` (the local store reserves ``name#<digits>`` for staging files) and caps the length.
    """
    base = _SEPARATORS.split(name)[-1]
    base = "".join(ch for ch in base if not _is_control(ch)).replace("#", "_")
    base = base.strip().lstrip(".").strip()
    if len(base) > MAX_NAME_CHARS:
        stem, dot, suffix = base.rpartition(".")
        keep = f"{dot}{suffix}" if dot and stem and len(suffix) <= 16 else ""
        base = base[: MAX_NAME_CHARS - len(keep)] + keep
    return base or "output"


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... (before the extension) if already in ``used``;
    the result is added to ``used``."""
    candidate = name
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    counter = 1
    while candidate in used:
        counter += 1
        candidate = f"{stem}-{counter}{dot}{suffix}"
    used.add(candidate)
    return candidate


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def _check_segments(provider: str, remote_id: str) -> None:
    # Both become path segments; a '/' or '..' in either would write outside the archive.
    for what, value in (("provider", provider), ("remote_id", remote_id)):
        reason = validate_remote_id(value)
        if reason is not None:
            raise InvalidRegistration(
                f"{what} {value!r} cannot name an archive: {reason.replace('remote_id', what)}"
            )


def _attributes(archive: ArchiveStore, content_type: str | None) -> dict[str, str] | None:
    # The local store refuses attributes outright; the manifest still records the type.
    if content_type is None or isinstance(archive.store, LocalStore):
        return None
    return {"Content-Type": content_type}


def _utc(now: datetime | float) -> datetime:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(UTC)
    return datetime.fromtimestamp(now, UTC)


@contextmanager
def _storage_errors(action: str, key: str) -> Iterator[None]:
    """Translate obstore's failures into the error tree, keeping the cause.

    Only obstore's own exception types are translated: whatever the provider's stream raised
    through the upload (OutputInvalid, ProviderUnavailable...) passes through untouched, and
    AlreadyExistsError and FileNotFoundError are left to the caller, which expects them.
    """
    try:
        yield
    except AlreadyExistsError:
        raise
    except BaseError as exc:
        raise StorageUnavailable(f"archive store could not {action} {key}: {exc}") from exc
