"""UP42 results archives (tarballs, and zips): download once to a bounded spool file, check,
list, stream members.

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

What is extracted follows the SDK (0.34.1 ``utils.py:98-154``, 4.3 ``utils.py:105-181``): a
tarball is tried first, then a zip. Of a tarball only regular files are archived (sparse ones
included); of a zip every entry not ending in ``/``. Where the SDK silently skipped links,
FIFOs and devices, they are skipped here too and listed (:attr:`Spool.skipped`, the manifest's
``skipped``); so are zip entries that are symlinks by their Unix mode (the SDK wrote the link's
target as a file) or encrypted. Directories are structure and are not listed.

What the SDK did not guard is refused (the archive fails with
:class:`~taskwarden.errors.OutputInvalid` naming the entry): absolute paths, ``..`` segments,
backslashes and control characters in any entry's name, more than ``results_max_members``
entries or more than ``results_max_bytes`` unpacked. Names follow the SDK's rule: when
``output/`` occurs in a name, what follows its first occurrence is kept (the SDK kept only up to
a second ``output/``, which can leave two files one name or none); the rest of the path becomes
the archive name with ``/`` written as ``__`` (the SDK recreated the directories; archive names
may hold folders now, but this adapter still keeps one level).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from taskwarden.errors import OutputInvalid, StorageUnavailable

CHUNK = 1024 * 1024
TAR_OVERHEAD = 1536  # a header block and padding per member, roughly
GZIP_SLACK = 64 * 1024  # incompressible data grows a little under gzip
SEPARATOR = "__"
PREFIX = "taskwarden-up42-"  # spool directories, one per process
# what a damaged archive raises (zlib.error is raw; NotImplementedError: a zip compression
# method Python lacks)
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError,
               NotImplementedError)  # fmt: skip


Kind = Literal["tar", "zip"]


@dataclass(frozen=True)
class Member:
    """A regular file in a results archive."""

    index: int  # position among the archive's entries
    path: str  # as stored in the archive
    name: str  # the archive name: up to ``output/`` cut, ``/`` as ``__``
    size: int


@dataclass(frozen=True)
class Skipped:
    """An entry of a results archive that is not a regular file, and what it is instead."""

    path: str
    reason: str


@dataclass(frozen=True)
class Contents:
    """What a results archive holds: its kind, its regular files, what was skipped."""

    kind: Kind
    members: list[Member]
    skipped: list[Skipped]


@dataclass
class Spool:
    """A downloaded archive on local disk and the members still to be streamed from it."""

    path: Path
    created: float
    contents: Contents
    pending: set[int] = field(default_factory=set)

    @property
    def members(self) -> list[Member]:
        return self.contents.members

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


def scan(path: Path, max_bytes: int, max_members: int, what: str) -> Contents:
    """What the archive at ``path`` holds, after checking every entry (blocking)."""
    try:
        if tarfile.is_tarfile(path):
            return _tally("tar", _tar_entries(path), max_bytes, max_members, what)
        if zipfile.is_zipfile(path):
            return _tally("zip", _zip_entries(path), max_bytes, max_members, what)
    except READ_ERRORS as exc:
        raise OutputInvalid(f"{what}: not a readable tarball or zip ({exc})") from exc
    raise OutputInvalid(f"{what}: the results are neither a tarball nor a zip")


# an entry: its name, its size, and None for a regular file, "" for a directory, or what
# else it is (the reason it is skipped)
Entry = tuple[str, int, str | None]


def _tally(
    kind: Kind, entries: Iterator[Entry], max_bytes: int, max_members: int, what: str
) -> Contents:
    members: list[Member] = []
    skipped: list[Skipped] = []
    total = 0
    for index, (path, size, other) in enumerate(entries):
        if index >= max_members:
            raise OutputInvalid(f"{what}: more than {max_members} members")
        check_path(path, what)
        if other == "":
            continue
        if other is not None:
            skipped.append(Skipped(path, other))
            continue
        total += size
        if total > max_bytes:
            raise OutputInvalid(f"{what}: more than {max_bytes} bytes unpacked")
        members.append(Member(index, path, archive_name(path, what), size))
    return Contents(kind, members, skipped)


def _tar_entries(path: Path) -> Iterator[Entry]:
    with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for info in tar:
            yield info.name, info.size, _tar_kind(info)


def _tar_kind(info: tarfile.TarInfo) -> str | None:
    if info.isfile():  # what the SDK extracts (tar_member.isfile()), sparse files included
        return None
    if info.isdir():
        return ""
    if info.issym():
        return f"symbolic link to {info.linkname!r}"
    if info.islnk():
        return f"hard link to {info.linkname!r}"
    kinds = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device"}
    return kinds.get(info.type, "FIFO" if info.isfifo() else f"entry of type {info.type!r}")


def _zip_entries(path: Path) -> Iterator[Entry]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            yield info.filename, info.file_size, _zip_kind(info)


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    if info.filename.endswith("/"):  # the SDK's test for a directory
        return ""
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: Unix
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return ""
    if mode and not stat.S_ISREG(mode):
        return "FIFO" if stat.S_ISFIFO(mode) else "device or other special file"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None


def check_path(path: str, what: str) -> None:
    """Refuse an entry whose name could write outside the results, or is not one path."""
    if any(unicodedata.category(ch) == "Cc" for ch in path) or "\\" in path:
        raise OutputInvalid(f"{what}: member {path!r} has a control character or backslash")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise OutputInvalid(f"{what}: member {path!r} points outside the results")


def archive_name(path: str, what: str) -> str:
    """The archive name of a regular file (see the module docstring)."""
    if "output/" in path:
        path = path.split("output/", 1)[1]
    parts = [part for part in PurePosixPath(path).parts if part not in ("", ".")]
    if not parts:
        raise OutputInvalid(f"{what}: member {path!r} has no name")
    return SEPARATOR.join(parts)


def member_chunks(spool: Spool, member: Member, what: str) -> Generator[bytes, None, None]:
    """The bytes of one member, read from the spooled archive (blocking)."""
    if spool.contents.kind == "zip":
        with zipfile.ZipFile(spool.path) as archive:
            info = archive.infolist()[member.index]
            if info.filename != member.path or info.file_size != member.size:
                raise OutputInvalid(f"{what}: the spooled zip changed at {member.path!r}")
            with archive.open(info) as body:
                while chunk := body.read(CHUNK):
                    yield chunk
        return
    with spool.path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for index, tar_info in enumerate(tar):
            if index < member.index:
                continue
            if tar_info.name != member.path or tar_info.size != member.size:
                raise OutputInvalid(f"{what}: the spooled tarball changed at {member.path!r}")
            data = tar.extractfile(tar_info)
            if data is None:
                raise OutputInvalid(f"{what}: member {member.path!r} has no data")
            while chunk := data.read(CHUNK):
                yield chunk
            return
    raise OutputInvalid(f"{what}: member {member.path!r} is missing from the spool")


async def stream_member(spool: Spool, member: Member, what: str) -> AsyncIterator[bytes]:
    """:func:`member_chunks` off the event loop, one chunk per thread hop."""
    chunks = member_chunks(spool, member, what)
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(next, chunks, None)
            except READ_ERRORS as exc:
                raise OutputInvalid(f"{what}: cannot read {member.path!r} ({exc})") from exc
            if chunk is None:
                return
            yield chunk
    finally:
        chunks.close()
