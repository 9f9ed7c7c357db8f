"""Naming rules for archive keys: what a platform's output name or a watch's ids may become.

Every segment of an archive key comes from outside (a provider's name, a remote id, a file name
a platform chose), so each is checked or cleaned here before it reaches the store: a ``/`` or
``..`` must never write outside the archive, and a ``#`` must never look like the local store's
staging files (``<key>#<n>``). Pure functions; no I/O.
"""

from __future__ import annotations

import re
import unicodedata

from taskwarden.errors import InvalidRegistration
from taskwarden.models import validate_remote_id

MAX_NAME_CHARS = 200  # under the 255-byte file name limit for most non-ASCII names too

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
