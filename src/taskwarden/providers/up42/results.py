"""UP42 results tarballs: download once to a bounded spool file, check, list, stream members.

Why a spool, and not one streaming pass: the archive asks ``list_outputs`` for every output
first and then opens them one at a time, so the members must be known before the first byte is
archived and readable again afterwards. Re-downloading the tarball for every member would cost
N+1 downloads of a file that can weigh gigabytes; one download to local disk costs one. What
the users of the SDK suffered from (a temp file per download that was never deleted, plus the
unpacked copy next to it) is avoided like this:

* the spool holds the compressed tarball only, never an unpacked copy: members are streamed out
  of it (``tarfile`` in streaming mode, 1 MiB at a time) straight into the archive;
* its size is capped (``results_max_bytes`` plus tar overhead) while it is written, and a
  download announced larger than the free space is refused before it starts;
* each spool is its own file in a per-process directory, so concurrent downloads of tasks of
  the same job never share a name;
* a spool is deleted as soon as its last member has been streamed, or when the same target is
  listed again (an archive retry), or when it has not been used for ``max_age`` (any process's
  next listing sweeps, so a killed worker's spools go too), and the whole directory when the
  process exits.

Before anything is archived, every member is checked: absolute paths, ``..`` segments,
backslashes and control characters, links, devices, FIFOs and sparse files are refused (the
archive then fails with :class:`~taskwarden.errors.OutputInvalid` naming the member), and so
are more than ``results_max_members`` members or more than ``results_max_bytes`` unpacked. The
``output/`` prefix UP42 puts on every member is stripped; the remaining path becomes the archive
name with ``/`` written as ``__`` (archive names are one segment).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tarfile
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from taskwarden.errors import OutputInvalid, StorageUnavailable

CHUNK = 1024 * 1024
TAR_OVERHEAD = 1536  # a header block and padding per member, roughly
GZIP_SLACK = 64 * 1024  # incompressible data grows a little under gzip
SEPARATOR = "__"
PREFIX = "taskwarden-up42-"  # spool directories, one per process


@dataclass(frozen=True)
class Member:
    """A regular file in a results tarball."""

    index: int  # position among the tarball's entries
    path: str  # as stored in the tarball
    name: str  # the archive name: ``output/`` stripped, ``/`` as ``__``
    size: int


@dataclass
class Spool:
    """A downloaded tarball on local disk and the members still to be streamed from it."""

    path: Path
    created: float
    members: list[Member] = field(default_factory=list)
    pending: set[int] = field(default_factory=set)

    def done(self, index: int) -> bool:
        """Mark a member streamed; True (and the file is gone) once every member has been."""
        self.pending.discard(index)
        if not self.pending:
            self.close()
            return True
        return False

    def touch(self) -> None:
        """Mark the spool in use, so that no sweep takes it for abandoned."""
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class SpoolDir:
    """This process's spool directory, created on first use and removed at exit."""

    def __init__(self, root: Path | None, max_age: float) -> None:
        self._root = root
        self._dir: Path | None = None
        self.max_age = max_age

    def new_file(self) -> tuple[BinaryIO, Path]:
        if self._dir is None or not self._dir.exists():
            base = self._root or Path(tempfile.gettempdir())
            try:
                base.mkdir(parents=True, exist_ok=True)
                self._dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create a spool directory in {base}: {exc}"
                ) from exc
            atexit.register(shutil.rmtree, self._dir, True)
        fd, name = tempfile.mkstemp(suffix=".tgz", dir=self._dir)
        return os.fdopen(fd, "wb"), Path(name)

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self._dir or self._root or tempfile.gettempdir()).free
        except OSError:
            return None

    def sweep(self, now: float) -> None:
        """Delete spools untouched for ``max_age``, this process's and those of processes that
        died without cleaning up (a SIGKILL skips ``atexit``), and their empty directories."""
        base = self._root or Path(tempfile.gettempdir())
        for folder in base.glob(f"{PREFIX}*"):
            try:
                stale = now - folder.stat().st_mtime > self.max_age  # before unlink touches it
                for path in folder.glob("*.tgz"):
                    if now - path.stat().st_mtime > self.max_age:
                        path.unlink(missing_ok=True)
                if folder != self._dir and stale and not any(folder.iterdir()):
                    folder.rmdir()
            except OSError:
                continue  # another process is sweeping too, or it is not ours to touch


async def write_spool(chunks: AsyncIterator[bytes], file: BinaryIO, limit: int, what: str) -> int:
    """Copy a download into ``file`` (closed afterwards), refusing to grow past ``limit``."""
    written = 0
    with file:
        async for chunk in chunks:
            written += len(chunk)
            if written > limit:
                raise OutputInvalid(f"{what}: the tarball is larger than {limit} bytes")
            try:
                file.write(chunk)
            except OSError as exc:
                raise StorageUnavailable(f"cannot spool {what}: {exc}") from exc
    return written


def spool_limit(max_bytes: int, max_members: int) -> int:
    """The largest compressed tarball worth downloading for these unpacking limits."""
    return max_bytes + TAR_OVERHEAD * (max_members + 2) + GZIP_SLACK


def scan(path: Path, max_bytes: int, max_members: int, what: str) -> list[Member]:
    """The regular files of the tarball at ``path``, after checking every entry (blocking)."""
    members: list[Member] = []
    total = 0
    try:
        with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for index, info in enumerate(tar):
                if index >= max_members:
                    raise OutputInvalid(f"{what}: more than {max_members} members")
                name = archive_name(info, what)
                if name is None:
                    continue
                total += info.size
                if total > max_bytes:
                    raise OutputInvalid(f"{what}: more than {max_bytes} bytes unpacked")
                members.append(Member(index, info.name, name, info.size))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        # zlib.error is not exported as a type here; tarfile wraps most of it as ReadError
        raise OutputInvalid(f"{what}: not a readable tarball ({exc})") from exc
    return members


def archive_name(info: tarfile.TarInfo, what: str) -> str | None:
    """The archive name of a regular file; None for a directory; raises for anything unsafe."""
    path = info.name
    if any(unicodedata.category(ch) == "Cc" for ch in path) or "\\" in path:
        raise OutputInvalid(f"{what}: member {path!r} has a control character or backslash")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise OutputInvalid(f"{what}: member {path!r} points outside the results")
    if info.issym() or info.islnk():
        raise OutputInvalid(f"{what}: member {path!r} is a link to {info.linkname!r}")
    if info.isdir():
        return None
    if not info.isfile() or info.issparse():
        raise OutputInvalid(f"{what}: member {path!r} is not a regular file")
    parts = [part for part in pure.parts if part not in ("", ".")]
    if parts and parts[0] == "output":
        parts = parts[1:]
    if not parts:
        raise OutputInvalid(f"{what}: member {path!r} has no name")
    return SEPARATOR.join(parts)


def member_chunks(path: Path, member: Member, what: str) -> Generator[bytes, None, None]:
    """The bytes of one member, read by streaming the spooled tarball up to it (blocking)."""
    with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for index, info in enumerate(tar):
            if index < member.index:
                continue
            if info.name != member.path or info.size != member.size:
                raise OutputInvalid(f"{what}: the spooled tarball changed at {member.path!r}")
            body = tar.extractfile(info)
            if body is None:
                raise OutputInvalid(f"{what}: member {member.path!r} has no data")
            while chunk := body.read(CHUNK):
                yield chunk
            return
    raise OutputInvalid(f"{what}: member {member.path!r} is missing from the spool")


async def stream_member(spool: Spool, member: Member, what: str) -> AsyncIterator[bytes]:
    """:func:`member_chunks` off the event loop, one chunk per thread hop."""
    chunks = member_chunks(spool.path, member, what)
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(next, chunks, None)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise OutputInvalid(f"{what}: cannot read {member.path!r} ({exc})") from exc
            if chunk is None:
                return
            yield chunk
    finally:
        chunks.close()
