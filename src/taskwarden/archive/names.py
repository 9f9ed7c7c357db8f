"""Naming rules for archive keys: what a platform's output name or a watch's ids may become.

Every segment of an archive key comes from outside (a provider's name, a remote id, a file name
a platform chose), so each is checked or cleaned here before it reaches the store: a ``/`` or
``..`` must never write outside the archive, and a ``#`` must never look like the local store's
staging files (``<key>#<n>``). An output's name may be a relative path (``<job id>/log.txt``):
folders inside the task's own folder, each segment cleaned like a name, and refused
(:class:`~taskwarden.errors.OutputInvalid`) when it would climb out or is not a path at all.
:class:`Names` keeps the names of one archive apart, files from folders. No I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from taskwarden.errors import InvalidRegistration, OutputInvalid
from taskwarden.models import validate_remote_id

MAX_NAME_CHARS = 200  # under the 255-byte file name limit for most non-ASCII names too
MAX_DEPTH = 16  # segments of an output's path
MAX_PATH_CHARS = 512  # of an output's cleaned path: S3 keys end at 1,024 bytes with the prefix

_SEPARATORS = re.compile(r"[/\\]")


def safe_name(name: str) -> str:
    """A single, harmless key segment for an output name from a platform.

    Keeps the last path component only, drops control characters and leading dots, replaces
    ``#`` (the local store reserves ``name#<digits>`` for staging files) and caps the length.
    """
    base = _SEPARATORS.split(name)[-1]
    base = "".join(ch for ch in base if not is_control(ch)).replace("#", "_")
    base = base.strip().lstrip(".").strip()
    if len(base) > MAX_NAME_CHARS:
        stem, dot, suffix = base.rpartition(".")
        keep = f"{dot}{suffix}" if dot and stem and len(suffix) <= 16 else ""
        base = base[: MAX_NAME_CHARS - len(keep)] + keep
    return base or "output"


def safe_path(name: str) -> str:
    """A harmless relative key path for an output name that may hold folders (``/``, or ``\\``
    as Windows writes them): each segment cleaned as :func:`safe_name` cleans a name.

    Raises OutputInvalid for a name that would climb out (``..`` or ``.``, as the name or a
    segment of it), is absolute or has empty segments (``/x``, ``a//b``, ``a/``), or is deeper
    than :data:`MAX_DEPTH` or longer than :data:`MAX_PATH_CHARS` once cleaned. Any other name
    with no separator is :func:`safe_name`'s (an empty one included).
    """
    segments = _SEPARATORS.split(name)
    dots = any(segment.strip() in (".", "..") for segment in segments)
    if len(segments) == 1 and not dots:
        return safe_name(name)
    why = None
    if dots:
        why = "a '.' or '..' segment would leave its folder"
    elif any(not segment.strip() for segment in segments):
        why = "it is absolute or has an empty segment"
    elif len(segments) > MAX_DEPTH:
        why = f"{len(segments)} segments is deeper than the {MAX_DEPTH} allowed"
    path = "/".join(safe_name(segment) for segment in segments)
    if why is None and len(path) > MAX_PATH_CHARS:
        why = f"{len(path)} characters is longer than the {MAX_PATH_CHARS} allowed"
    if why is not None:
        raise OutputInvalid(f"output name {name[:300]!r} is not a safe relative path: {why}")
    return path


class Names:
    """The names taken in one archive, kept apart: no two outputs get one key, and no output
    is a file where another's folder is (a file archive could not hold both). ``reserved`` are
    names the archive itself writes (its manifest, its snapshot folder)."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self.files: set[str] = set(reserved)
        self.folders: set[str] = set()

    def claim(self, path: str) -> str:
        """``path`` (already safe), or the first free variant of it: the segment that meets a
        file (or, last, a folder) of the same name gets ``-2``, ``-3``... before its extension.
        The result is taken."""
        segments = path.split("/")
        for index in range(len(segments)):
            last = index == len(segments) - 1
            head = "/".join(segments[: index + 1])
            if head in self.files or (last and head in self.folders):
                segments[index] = self._free(segments[:index], segments[index], last)
        claimed = "/".join(segments)
        self.files.add(claimed)
        self.folders.update("/".join(segments[:end]) for end in range(1, len(segments)))
        return claimed

    def _free(self, parents: list[str], segment: str, last: bool) -> str:
        stem, dot, suffix = segment.rpartition(".") if last else ("", "", "")
        if not stem:
            stem, dot, suffix = segment, "", ""
        counter = 1
        while True:
            counter += 1
            candidate = f"{stem}-{counter}{dot}{suffix}"
            head = "/".join([*parents, candidate])
            if head not in self.files and not (last and head in self.folders):
                return candidate


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


def is_control(ch: str) -> bool:
    """Whether ``ch`` is a control character (never allowed in a key)."""
    return unicodedata.category(ch) == "Cc"


def check_segments(provider: str, remote_id: str) -> None:
    """Refuse a provider name or remote id that cannot be a single key segment."""
    # Both become path segments; a '/' or '..' in either would write outside the archive.
    for what, value in (("provider", provider), ("remote_id", remote_id)):
        reason = validate_remote_id(value)
        if reason is not None:
            raise InvalidRegistration(
                f"{what} {value!r} cannot name an archive: {reason.replace('remote_id', what)}"
            )
