"""``taskwarden track --from-file``: registrations read from JSON lines or CSV, stored a chunk
per round trip, and answered line by line.

JSON lines: one registration object per line (the queue message's fields); blank lines are
skipped. CSV: a header row naming the fields, then one registration per row. ``provider`` and
``remote_id`` are columns; ``labels`` and ``params`` hold ``k=v`` pairs separated by ``;`` (or
a JSON object); ``label.<key>`` and ``param.<key>`` columns hold one each; ``timeout`` is
seconds, ``archive`` success, final or none, ``abort_on_timeout`` true or false; empty cells
are left out. Any other column is passed on as it is (and refused by validation, per row).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Any

from taskwarden.service import registration

TRUE = {"true", "1", "yes", "y"}
FALSE = {"false", "0", "no", "n", ""}


def read(stream: IO[str], fmt: str = "auto") -> Iterator[tuple[int, object]]:
    """Each registration in ``stream`` with its line number; ``fmt``: jsonl, csv or auto (JSON
    lines when the first non-blank character is ``{``). A line that is not JSON is passed on as
    its text, so that it is refused (and dead-lettered) like any other invalid registration."""
    if fmt == "auto":
        first = ""
        buffered: list[str] = []
        for line in stream:
            buffered.append(line)
            if line.strip():
                first = line.lstrip()[0]
                break
        fmt = "jsonl" if first == "{" else "csv"
        lines: Iterable[str] = _chain(buffered, stream)
    else:
        lines = stream
    if fmt == "jsonl":
        yield from _jsonl(lines)
    else:
        yield from _csv(lines)


def _chain(first: list[str], rest: IO[str]) -> Iterator[str]:
    yield from first
    yield from rest


def _jsonl(lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            yield number, json.loads(text)
        except ValueError:
            yield number, text


def _csv(lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    reader = csv.DictReader(lines)
    for row in reader:
        yield reader.line_num, _from_row(row)


def _from_row(row: dict[str | Any, str | Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, cell in row.items():
        if column is None or cell is None or cell == "":
            continue  # a row longer than the header, or an empty cell
        name, value = column.strip(), str(cell).strip()
        if name in ("labels", "params"):
            out.setdefault(name, {}).update(_pairs(value))
        elif name.startswith(("label.", "param.")):
            kind, _, key = name.partition(".")
            out.setdefault(kind + "s", {})[key] = value
        elif name == "timeout":
            out[name] = _number(value)
        elif name == "archive":
            out[name] = False if value.lower() == "none" else value
        elif name == "abort_on_timeout":
            lowered = value.lower()
            out[name] = True if lowered in TRUE else False if lowered in FALSE else value
        else:
            out[name] = value
    return out


def _pairs(text: str) -> dict[str, Any]:
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError:
            return {"": text}  # refused by validation with the column's name
        return found if isinstance(found, dict) else {"": text}
    pairs: dict[str, Any] = {}
    for part in text.split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            pairs[key.strip()] = value.strip()
    return pairs


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # refused by validation, with its reason


def chunks(
    items: Iterable[tuple[int, object]], size: int = registration.CHUNK
) -> Iterator[list[tuple[int, object]]]:
    """``items`` a list of at most ``size`` at a time."""
    found = iter(items)
    while chunk := list(islice(found, size)):
        yield chunk


def with_defaults(item: object, defaults: dict[str, Any]) -> object:
    """``item`` with the command line's options where it does not say (labels and params
    merged, the item's own winning)."""
    if not isinstance(item, dict) or not defaults:
        return item
    merged = {**defaults, **item}
    for key in ("labels", "params"):
        if key in defaults and isinstance(item.get(key, {}), dict):
            merged[key] = {**defaults[key], **item.get(key, {})}
    return merged
