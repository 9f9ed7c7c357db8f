"""EarthOne's ``GET /jobs`` query: filters as the SDK serializes them, sorting, and paging.

The SDK (``core/common/client/search.py``) sends ``filter`` as a JSON list of clauses that all
must hold: ``{"name", "op", "val"}`` comparisons (``eq ne gt gte lt lte prefix like ilike``,
and ``isnull``/``isnotnull`` without ``val``), ``{"or": [...]}`` and ``{"and": [...]}``; plus
``limit``, repeated ``sort`` (``-creation_date``), ``page_size`` and ``include``. Later pages
carry **only** ``page_cursor`` (``api_service.py:217-233``), so the cursor encodes the whole
query; a cursor sent with anything else, or one that does not decode, is refused.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from starlette.datastructures import QueryParams

FIELDS = frozenset({
    "id", "function_id", "status", "creation_date", "execution_count", "exit_code", "tags",
    "last_execution_date", "last_completion_date", "runtime", "error_reason",
})  # fmt: skip
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b or (isinstance(a, list) and b in a),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and a > b,
    "gte": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b,
    "lte": lambda a, b: a is not None and a <= b,
    "prefix": lambda a, b: isinstance(a, str) and a.startswith(str(b)),
    "like": lambda a, b: isinstance(a, str) and fnmatch.fnmatchcase(a, _glob(b)),
    "ilike": lambda a, b: isinstance(a, str) and fnmatch.fnmatch(a.lower(), _glob(b).lower()),
}


class QueryError(ValueError):
    """A query the API refuses with a 400."""


@dataclass(frozen=True)
class JobQuery:
    """A parsed ``GET /jobs`` query, and where its next page starts."""

    filter: tuple[Any, ...] = ()
    sort: tuple[str, ...] = ()
    limit: int | None = None
    page_size: int = 100
    include: tuple[str, ...] = ()
    offset: int = 0

    @classmethod
    def parse(cls, q: QueryParams, default_size: int, max_size: int) -> JobQuery:
        """The query of a first page, or the one a ``page_cursor`` encodes."""
        cursor = q.get("page_cursor")
        if cursor is not None:
            if set(q.keys()) != {"page_cursor"}:
                raise QueryError("page_cursor cannot be combined with other parameters")
            return cls.decode(cursor)
        try:
            clauses = json.loads(q.get("filter") or "[]")
            limit = int(q["limit"]) if "limit" in q else None
            size = min(max_size, int(q.get("page_size") or default_size))
        except ValueError as exc:
            raise QueryError(f"invalid query: {exc}") from exc
        if not isinstance(clauses, list):
            raise QueryError("filter must be a JSON list of clauses")
        for clause in clauses:
            _check(clause)
        for key in q.getlist("sort"):
            if key.lstrip("-") not in FIELDS:
                raise QueryError(f"cannot sort on {key!r}")
        if (limit is not None and limit < 0) or size < 1:
            raise QueryError("limit must be >= 0 and page_size >= 1")
        return cls(
            tuple(clauses), tuple(q.getlist("sort")), limit, size, tuple(q.getlist("include"))
        )

    @classmethod
    def decode(cls, cursor: str) -> JobQuery:
        try:
            fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            return cls(
                filter=tuple(fields["filter"]),
                sort=tuple(fields["sort"]),
                limit=fields["limit"],
                page_size=int(fields["page_size"]),
                include=tuple(fields["include"]),
                offset=int(fields["offset"]),
            )
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise QueryError("invalid page_cursor") from exc

    def encode(self, offset: int) -> str:
        fields = asdict(self) | {"offset": offset}
        raw = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def matches(self, doc: Mapping[str, Any]) -> bool:
        return all(_holds(clause, doc) for clause in self.filter)

    def ordered(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``docs`` (in creation order) sorted by the query's keys, last key first."""
        for key in reversed(self.sort):
            name = key.lstrip("-")
            docs.sort(key=lambda d: (d.get(name) is None, d.get(name) or ""), reverse=key[0] == "-")
        return docs

    def page(self, docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The page of ``docs`` (all the matches, ordered) this query asks for."""
        total = len(docs)
        end = total if self.limit is None else min(total, self.limit)
        if self.limit == 0:
            return {"data": [], "meta": {"page_cursor": None, "total": total}}
        stop = min(end, self.offset + self.page_size)
        more = self.encode(stop) if stop < end else None
        return {
            "data": list(docs[self.offset : stop]),
            "meta": {"page_cursor": more, "total": total},
        }


def filter_of(body: Any) -> JobQuery:
    """The query of a ``POST /jobs/cancel`` body: ``{"filter": [...], ...}``."""
    if not isinstance(body, dict) or not isinstance(body.get("filter", []), list):
        raise QueryError("the body must be {'filter': [clauses]}")
    for clause in body.get("filter", []):
        _check(clause)
    return JobQuery(filter=tuple(body.get("filter", [])))


def _check(clause: Any) -> None:
    if isinstance(clause, dict) and set(clause) in ({"or"}, {"and"}):
        inner = next(iter(clause.values()))
        if not isinstance(inner, list):
            raise QueryError(f"{clause!r}: or/and take a list")
        for item in inner:
            _check(item)
        return
    if not isinstance(clause, dict) or clause.get("name") not in FIELDS:
        raise QueryError(f"invalid filter clause {clause!r}")
    op = clause.get("op")
    if op in ("isnull", "isnotnull"):
        return
    if op not in _COMPARE or "val" not in clause:
        raise QueryError(f"invalid filter clause {clause!r}: unknown op or no val")


def _holds(clause: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    if "or" in clause:
        return any(_holds(item, doc) for item in clause["or"])
    if "and" in clause:
        return all(_holds(item, doc) for item in clause["and"])
    value, op = doc.get(clause["name"]), clause["op"]
    if op == "isnull":
        return value is None
    if op == "isnotnull":
        return value is not None
    try:
        return _COMPARE[op](value, clause["val"])
    except TypeError:
        return False


def _glob(pattern: Any) -> str:
    return str(pattern).replace("%", "*").replace("_", "?")
