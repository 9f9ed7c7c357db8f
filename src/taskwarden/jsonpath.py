"""Where a value sits in a JSON document, and URL templates: the pure half of the generic
HTTP provider (:mod:`taskwarden.providers.generic`).

A path names one value. Two syntaxes, told apart by the first character:

    /data/attributes/phase   an RFC 6901 JSON pointer: starts with "/"; in a segment "~1" is
                             "/" and "~0" is "~" (so any key can be written)
    data.attributes.phase    a dotted path: keys separated by "."; a key that itself holds a
                             "." or starts with "/" needs the pointer syntax
    ""                       the whole document (either syntax)

In both, a segment that is a decimal number indexes a list (``outputs.0.url``,
``/outputs/0/url``) and is an ordinary key on an object. There are no wildcards, filters or
negative indexes: a profile says exactly where each value is.

A URL template is a URL with ``{name}`` placeholders (``https://api.acme.com/jobs/{id}``).
Every value is percent-encoded whole (``/``, ``?``, ``#``, ``@`` included), so a value can fill
one path segment or query value and never change the host or add a path segment; ``.`` and
``..`` are refused because a client would resolve them as path steps. Braces have no other use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

Path = tuple[str, ...]


class _Missing:
    """The value of a path that leads nowhere (a missing key, an index past the end, a step
    into a string). Distinct from JSON ``null``, which is a value."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_path(text: str) -> Path:
    """The segments of a path in either syntax; ``ValueError`` says what is wrong with it."""
    if text == "":
        return ()
    if text.startswith("/"):
        if _BAD_ESCAPE.search(text):
            raise ValueError(f"JSON pointer {text!r}: '~' must be followed by 0 or 1")
        return tuple(seg.replace("~1", "/").replace("~0", "~") for seg in text[1:].split("/"))
    segments = tuple(text.split("."))
    if any(seg == "" for seg in segments):
        raise ValueError(f"dotted path {text!r} has an empty segment")
    return segments


def resolve(document: Any, path: Path) -> Any:
    """The value at ``path`` in ``document``, or :data:`MISSING`."""
    value = document
    for segment in path:
        if isinstance(value, Mapping):
            if segment not in value:
                return MISSING
            value = value[segment]
        elif isinstance(value, list):
            if not _INDEX.fullmatch(segment) or int(segment) >= len(value):
                return MISSING
            value = value[int(segment)]
        else:
            return MISSING
    return value


def lookup(document: Any, text: str) -> Any:
    """:func:`resolve` for a path not compiled yet (``ValueError`` when it is malformed)."""
    return resolve(document, compile_path(text))


def template_fields(template: str) -> frozenset[str]:
    """The placeholder names of a URL template; ``ValueError`` for a stray brace."""
    rest = _PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        raise ValueError(
            f"template {template!r}: braces are only for {{name}} placeholders"
            " (letters, digits, underscore)"
        )
    return frozenset(_PLACEHOLDER.findall(template))


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a URL template; ``KeyError`` names a placeholder without a value, ``ValueError`` a
    value that cannot be put in a URL."""
    for name in template_fields(template):
        if name not in values:
            raise KeyError(name)
        if values[name] in ("", ".", ".."):
            raise ValueError(f"{{{name}}} cannot be {values[name]!r} in a URL")

    def fill(match: re.Match[str]) -> str:
        return quote(values[match.group(1)], safe="")

    return _PLACEHOLDER.sub(fill, template)
