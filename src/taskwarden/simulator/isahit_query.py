"""The isahit task list's query: its filters, as the SDK sends them, and its pages.

Filters are repeatable query parameters (``batchIds=a&batchIds=b``); a task must pass every one
given. Dates carry an operator prefix and are read as UTC. Pages follow mongoose-paginate-v2,
whose envelope the API returns: with ``pagination=false`` every match is one page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import QueryParams

from taskwarden.simulator.isahit_tasks import OPTIONAL_FIELDS, IsahitTask

BAD_QUERY = 4000  # errorCode of a malformed list query (the simulator's own numbering)
NO_PROJECT = 4001
_DATE = re.compile(r"^(>=|<=|>|<)(.+)$")
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


class QueryError(ValueError):
    """A list query the API refuses with a 400 and this ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class TaskQuery:
    """A parsed task-list query."""

    project: str
    pagination: bool
    page: int
    limit: int
    fields: frozenset[str]
    batches: frozenset[str]
    statuses: frozenset[str]
    ids: frozenset[str]
    names: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    dates: tuple[tuple[str, str, float], ...]  # (createdAt | updatedAt, operator, epoch)
    properties: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, q: QueryParams) -> TaskQuery:
        """The query; raises :class:`QueryError` when the API would refuse it."""
        project = q.get("projectId")
        if not project:
            raise QueryError("projectId is required", NO_PROJECT)
        try:
            page, limit = int(q.get("page") or 1), int(q.get("limit") or 10)
            if page < 1 or limit < 0:
                raise ValueError("page must be >= 1 and limit >= 0")
            fields = frozenset(q.getlist("optionalFields"))
            if fields - OPTIONAL_FIELDS:
                raise ValueError(f"unknown optionalFields {sorted(fields - OPTIONAL_FIELDS)}")
            patterns = tuple(re.compile(p) for p in q.getlist("nameLike"))
            dates = tuple(
                (key, *_bound(value))
                for key in ("createdAt", "updatedAt")
                for value in q.getlist(key)
            )
        except (ValueError, re.error) as exc:
            raise QueryError(f"invalid query: {exc}", BAD_QUERY) from exc
        return cls(
            project=project,
            pagination=q.get("pagination", "true").lower() != "false",
            page=page,
            limit=limit,
            fields=fields,
            batches=frozenset(q.getlist("batchIds")),
            statuses=frozenset(q.getlist("statuses")),
            ids=frozenset(q.getlist("taskIds")),
            names=frozenset(q.getlist("taskNames")),
            patterns=patterns,
            dates=dates,
            properties=tuple(
                (k.removeprefix("properties."), v)
                for k, v in q.multi_items()
                if k.startswith("properties.")
            ),
        )

    def matches(self, task: IsahitTask, status: tuple[str, float]) -> bool:
        spec = task.script
        word, since = status
        if spec.project_id != self.project:
            return False
        if (self.batches and spec.batch_id not in self.batches) or (
            self.statuses and word not in self.statuses
        ):
            return False
        if (self.ids and spec.task_id not in self.ids) or (
            self.names and spec.name not in self.names
        ):
            return False
        if not all(p.search(spec.name) for p in self.patterns):
            return False
        stamps = {"createdAt": task.epoch, "updatedAt": task.wall(since)}
        if not all(_compare(stamps[key], op, bound) for key, op, bound in self.dates):
            return False
        properties = task.properties(word)
        return all(_lookup(properties, key) == value for key, value in self.properties)

    def paginate(self, found: Sequence[IsahitTask]) -> tuple[Sequence[IsahitTask], dict[str, Any]]:
        """The page of ``found`` asked for, and the envelope's other fields."""
        total, page = len(found), self.page
        if not self.pagination:
            return found, {
                "totalDocs": total, "limit": total, "totalPages": 1, "page": page,
                "pagingCounter": (page - 1) * total + 1, "hasPrevPage": False,
                "hasNextPage": False, "prevPage": None, "nextPage": None,
            }  # fmt: skip
        limit = self.limit
        pages = max(1, -(-total // limit)) if limit > 0 else 1
        start = (page - 1) * limit
        return found[start : start + limit], {
            "totalDocs": total,
            "limit": limit,
            "totalPages": pages,
            "page": page,
            "pagingCounter": start + 1,
            "hasPrevPage": page > 1,
            "hasNextPage": page < pages,
            "prevPage": page - 1 if page > 1 else None,
            "nextPage": page + 1 if page < pages else None,
        }


def _lookup(properties: Mapping[str, Any], dotted: str) -> str | None:
    value: Any = properties
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return None if value is None else str(value)


def _bound(value: str) -> tuple[str, float]:
    match = _DATE.match(value.strip())
    if match is None:
        raise ValueError(f"a date filter needs an operator prefix (>, >=, <, <=): {value!r}")
    op, text = match.groups()
    for form in _DATE_FORMATS:
        try:
            return op, datetime.strptime(text.strip(), form).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ValueError(f"unreadable date {text!r}")


def _compare(stamp: float, op: str, bound: float) -> bool:
    if op == ">":
        return stamp > bound
    if op == ">=":
        return stamp >= bound
    if op == "<":
        return stamp < bound
    return stamp <= bound
