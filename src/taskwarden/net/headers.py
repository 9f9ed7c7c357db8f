"""What a response's headers say: ``Retry-After``, ``Content-Length``, ``Content-Disposition``.

Pure readers of header values, shared by the HTTP plumbing and the adapters. Each gives None
for a value it cannot trust instead of raising: a platform's odd header is not a failed request.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

import httpx


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    A date in the past means "now" (0); anything unreadable means "not said" (None).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^;]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]+)', re.IGNORECASE)


def content_disposition_filename(header: str | None) -> str | None:
    """The file name a ``Content-Disposition`` header announces, reduced to a safe base name.

    RFC 6266 ``filename*`` (RFC 5987 encoded) wins over ``filename``. Directory parts are
    dropped; a name that is empty, ``.``/``..`` or has control characters gives None.
    """
    if not header:
        return None
    name: str | None = None
    star = _FILENAME_STAR.search(header)
    if star:
        raw = star.group(1).strip().strip('"')
        charset, _, rest = raw.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            name = unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            name = None
    if name is None:
        plain = _FILENAME.search(header)
        if plain:
            name = plain.group(1).strip()
            if name.startswith('"') and name.endswith('"') and len(name) >= 2:
                # only \" and \\ are escapes; other backslashes are a Windows path's
                name = re.sub(r'\\(["\\])', r"\1", name[1:-1])
    return None if name is None else safe_filename(name)


def safe_filename(name: str) -> str | None:
    """``name`` reduced to its last path segment, or None when nothing usable is left
    (empty, ``.``/``..``, over 255 characters, or with control characters)."""
    name = re.split(r"[/\\]", name)[-1].strip()
    if name in ("", ".", "..") or len(name) > 255:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return None
    return name


def content_length(response: httpx.Response) -> int | None:
    """The announced body length, when it is a sane number and describes the decoded body."""
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None  # the header counts compressed bytes; we hand out decoded ones
    raw = response.headers.get("Content-Length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)
