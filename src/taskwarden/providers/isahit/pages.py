"""isahit's task list as the adapter reads it: a page (:func:`parse_page`), the query string as
the SDK encodes it (:func:`query`), how documents are archived (:func:`encode`), and the small
cache of full pages a batch archive takes its documents from (:class:`PageCache`).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from taskwarden import net
from taskwarden.errors import ProviderUnavailable

NAME = "isahit"
TASKS = "api/task-manager/tasks"


@dataclass(frozen=True)
class Page:
    """One page of the task list."""

    docs: list[dict[str, Any]]
    total: int
    next_page: int | None


def parse_page(response: httpx.Response) -> Page:
    """A page of the task list, checked enough to be walked safely."""
    body = net.json_body(response, provider=NAME)
    docs = body.get("docs") if isinstance(body, dict) else None
    total = body.get("totalDocs") if isinstance(body, dict) else None
    if not isinstance(docs, list) or not isinstance(total, int) or isinstance(total, bool):
        raise ProviderUnavailable(
            f"GET {TASKS}: expected a page {{docs, totalDocs, …}}, got {type(body).__name__}",
            provider=NAME,
            status_code=response.status_code,
        )
    assert isinstance(body, dict)
    following = body.get("nextPage")
    has_next = body.get("hasNextPage") is True and isinstance(following, int)
    return Page(
        docs=[doc for doc in docs if isinstance(doc, dict)],
        total=max(0, total),
        next_page=following if has_next and not isinstance(following, bool) else None,
    )


def encode(document: Any) -> bytes:
    """How a document is archived: indented UTF-8 JSON in the platform's key order."""
    return json.dumps(document, ensure_ascii=False, indent=2).encode() + b"\n"


class PageCache:
    """Full documents of the batch pages being archived, each kept until it is taken once.

    At most ``max_pages`` pages, each for ``ttl`` seconds: an archive that failed halfway
    leaves a page behind, which must neither pile up nor be served stale to its retry.
    """

    def __init__(
        self, max_pages: int = 4, ttl: float = 120.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pages: OrderedDict[Any, tuple[float, dict[str, dict[str, Any]]]] = OrderedDict()
        self._max, self._ttl, self._clock = max_pages, ttl, clock

    def put(self, key: Any, docs: Sequence[dict[str, Any]]) -> None:
        by_id = {doc["_id"]: doc for doc in docs if isinstance(doc.get("_id"), str)}
        self._pages[key] = (self._clock(), by_id)
        self._pages.move_to_end(key)
        while len(self._pages) > self._max:
            self._pages.popitem(last=False)

    def take(self, key: Any, task_id: str) -> dict[str, Any] | None:
        entry = self._pages.get(key)
        if entry is None:
            return None
        stored, docs = entry
        if self._clock() - stored > self._ttl:
            del self._pages[key]
            return None
        doc = docs.pop(task_id, None)
        if not docs:
            del self._pages[key]
        return doc


def query(
    project: str,
    page: int,
    limit: int,
    subject: tuple[str, str],
    statuses: Sequence[str] = (),
    fields: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """The list's query string, repeated keys as the SDK (requests) sends them."""
    found = [("pagination", "true"), ("page", str(page)), ("limit", str(limit))]
    found += [("projectId", project), subject]
    found += [("statuses", word) for word in statuses]
    found += [("optionalFields", field) for field in fields]
    return found
