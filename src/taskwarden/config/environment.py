"""Strict ``TASKWARDEN_*`` variables: each must name a setting, or the process does not start.

pydantic-settings ignores a variable that names no field, so a typo (``TASKWARDEN_API__HOTS``)
would silently leave the default in place, and a warden would run on settings nobody chose.
:func:`unknown_variables` walks the ``Settings`` model the way pydantic-settings reads it (prefix
``TASKWARDEN_``, nested models and dict keys joined by ``__``, any name case) and says, for each
variable that names nothing, which valid one is nearest (:mod:`difflib`).

A few variables are read outside ``Settings`` and are known here too: :data:`OUTSIDE_SETTINGS`,
and any under :data:`TEST_PREFIX` (the test suite's own).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

#: read by the test suite, not by taskwarden
OUTSIDE_SETTINGS = frozenset({"TASKWARDEN_UP42_LEGACY_PYTHON"})
TEST_PREFIX = "TASKWARDEN_TEST_"  # reserved for tests and tools: never a setting


def unknown_variables(environ: Mapping[str, str], model: type[BaseModel], prefix: str) -> list[str]:
    """One line per variable under ``prefix`` that names no field of ``model``, with the nearest
    valid name (or the valid names at the level where it went wrong)."""
    problems = []
    for var in sorted(environ):
        name = var.upper()
        if not name.startswith(prefix) or name in OUTSIDE_SETTINGS or name.startswith(TEST_PREFIX):
            continue
        parts = name[len(prefix) :].split("__")
        wrong = _wrong_part(model, parts)
        if wrong is not None:
            problems.append(f"{var}: no such setting{_hint(prefix, parts, *wrong)}")
    return problems


def _wrong_part(
    model: type[BaseModel], parts: list[str]
) -> tuple[int, type[BaseModel] | None] | None:
    """Where ``parts`` stop naming a setting: the index of the first wrong part and the model
    whose field it should have named (None: nothing may follow); None when they name one."""
    kind, target = "model", model
    for index, part in enumerate(parts):
        if kind == "model":
            fields = {name.lower(): info for name, info in target.model_fields.items()}
            if part.lower() not in fields:
                return index, target
            kind, target = _shape(fields[part.lower()].annotation)
        elif kind == "dict" and part:  # a key of the caller's choosing (a provider, a profile)
            kind, target = _shape(target)
        else:  # a plain value (or an empty key) has nothing below it
            return index, None
    return None


def _shape(annotation: Any) -> tuple[str, Any]:
    """("model", the model) | ("dict", its value type) | ("value", None)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _shape(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        for arg in get_args(annotation):
            if arg is not type(None) and (shape := _shape(arg))[0] != "value":
                return shape
        return "value", None
    if origin is dict or origin is Mapping:
        args = get_args(annotation)
        return "dict", args[1] if len(args) == 2 else Any
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    return "value", None


def _hint(prefix: str, parts: list[str], index: int, model: type[BaseModel] | None) -> str:
    """The nearest valid name: the wrong part's nearest field, else the nearest name of the
    whole rest (``API_HOST`` for ``API__HOST``), else a field it begins (``BACKOFF``)."""
    above = parts[:index]
    if model is None:
        return f"; {prefix}{'__'.join(above)} takes a value, nothing below it"
    part, rest = parts[index].lower(), "__".join(parts[index:]).lower()
    valid = sorted(name.lower() for name in model.model_fields)
    close = difflib.get_close_matches(part, valid, n=1)
    if close:
        fixed = [*above, close[0].upper(), *parts[index + 1 :]]
        return f"; did you mean {prefix}{'__'.join(fixed)}?"
    whole = difflib.get_close_matches(rest, list(_paths(model)), n=1)
    begun = [name for name in valid if part and name.startswith(part)]
    if whole or len(begun) == 1:
        return f"; did you mean {prefix}{'__'.join([*above, (whole or begun)[0].upper()])}?"
    where = f"{prefix}{'__'.join([*above, ''])}"
    return f"; valid after {where}: {', '.join(v.upper() for v in valid)}"


def _paths(model: type[BaseModel], above: str = "") -> Iterator[str]:
    """Every setting's name below ``model`` (lower case, without the prefix), dicts' keys not
    entered."""
    for name, info in model.model_fields.items():
        path = f"{above}{name}"
        yield path
        kind, target = _shape(info.annotation)
        if kind == "model":
            yield from _paths(target, f"{path}__")
