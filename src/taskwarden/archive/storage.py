"""Object storage: the only module that calls obstore, for the archive (:mod:`taskwarden.archive`).

Opens the store named by ``TASKWARDEN_ARCHIVE_URL`` (``file://``, ``memory://``, ``s3://``,
``gs://``, ``az://``), reads, writes and lists objects, and translates obstore's failures into
:class:`~taskwarden.errors.StorageUnavailable` (retryable), keeping the cause.

obstore's async calls leave work in its Rust runtime that still touches Python just after the
awaited call returns; a process that exits right then can abort with SIGABRT (measured: about one
exit in five, against S3 and the local store alike). Whoever owns the event loop must
``await settle()`` before closing it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError
from obstore.store import LocalStore, MemoryStore, S3Store

from taskwarden.archive.names import is_control
from taskwarden.config import Settings
from taskwarden.errors import ConfigError, StorageUnavailable

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig, S3Config

_STAGING = re.compile(r"#\d+$")  # the local store's staging files: <key>#<n>
MIN_CHUNK_SIZE = 5 * 1024 * 1024  # S3's smallest multipart part (all but the last)
UPLOAD_CONCURRENCY = 2  # parts in flight per output: bounds memory at a few chunks
SETTLE_SECONDS = 0.1

# Transport-level retries only; the archive job itself is retried by the worker's policy, so a
# long in-process retry loop here would only hold a worker slot hostage.
_RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
}


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
    if any(seg in (".", "..") or any(map(is_control, seg)) for seg in segments):
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


async def write_object(
    archive: ArchiveStore, key: str, data: bytes, content_type: str | None
) -> None:
    """Store ``data`` (held in memory already) at ``key``, replacing what is there."""
    attributes = _attributes(archive, content_type)
    with _storage_errors("write", key):
        await obstore.put_async(archive.store, key, data, attributes=attributes)


async def write_stream(
    archive: ArchiveStore,
    key: str,
    pieces: AsyncIterator[bytes],
    *,
    content_type: str | None,
    chunk_size: int,
) -> None:
    """Store a stream at ``key`` as a multipart upload, holding a few ``chunk_size`` parts.

    Multipart, never ``mode="create"``: a create-only put of a stream buffers the whole object
    in memory for a single PUT. Multipart also makes the object visible only on completion (S3
    completes the upload, the local store renames a staging file), so an exception raised from
    ``pieces`` (a length mismatch, the provider failing) aborts the upload, leaves no object and
    passes through untranslated.
    """
    with _storage_errors("write", key):
        await obstore.put_async(
            archive.store,
            key,
            pieces,
            attributes=_attributes(archive, content_type),
            use_multipart=True,
            chunk_size=chunk_size,
            max_concurrency=UPLOAD_CONCURRENCY,
        )


async def create_object(archive: ArchiveStore, key: str, data: bytes) -> bool:
    """Store ``data`` at ``key`` unless an object is there; False (and nothing written) if one
    was. The store decides, so of two writers racing, exactly one gets True."""
    try:
        with _storage_errors("write", key):
            await obstore.put_async(archive.store, key, data, mode="create")
    except AlreadyExistsError:
        return False
    return True


async def read_object_async(archive: ArchiveStore, key: str) -> bytes:
    """The bytes of one object (raises FileNotFoundError if absent); small objects."""
    with _storage_errors("read", key):
        result = await obstore.get_async(archive.store, key)
        return bytes(await result.bytes_async())


def read_object(archive: ArchiveStore, key: str) -> bytes:
    """The bytes of one object (raises FileNotFoundError if absent). Blocking; small objects."""
    with _storage_errors("read", key):
        return bytes(obstore.get(archive.store, key).bytes())


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


def probe(archive: ArchiveStore) -> None:
    """Read one listing page of at most one key: the store is reachable and readable, whatever
    its size (readiness checks). Raises what obstore raises."""
    for _ in obstore.list(archive.store, archive.prefix or None, chunk_size=1):
        break


def sweep_staging(archive: ArchiveStore, under: str) -> int:
    """Delete what killed uploads left under ``under`` in a ``file://`` archive; return how many.

    The local store writes a multipart upload to a staging file ``<key>#<n>`` and renames it on
    completion; a process killed in between leaves the staging file, which obstore never lists
    and nobody else would remove. Output names never hold a ``#``
    (:func:`~taskwarden.archive.names.safe_name`), so those files are all leftovers. Only safe
    while no other upload under ``under`` runs: the caller holds the watch's archive run. (On S3
    a killed upload is an incomplete multipart upload, invisible and billed until a bucket
    lifecycle rule aborts it: see the README.)
    """
    if archive.local_root is None:
        return 0
    removed = 0
    for path in (archive.local_root / under).rglob("*#*"):
        if _STAGING.search(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _attributes(archive: ArchiveStore, content_type: str | None) -> dict[str, str] | None:
    # The local store refuses attributes outright; the manifest still records the type.
    if content_type is None or isinstance(archive.store, LocalStore):
        return None
    return {"Content-Type": content_type}


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
