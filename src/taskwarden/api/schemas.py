"""The HTTP API's request and response shapes: what ``/openapi.json`` documents is what is sent.

A watch is :class:`taskwarden.models.Watch` itself (a dataclass), so a field added there is
documented and sent without a second definition here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from taskwarden.lifecycle import State
from taskwarden.models import Watch


class Error(BaseModel):
    """Every error: one sentence saying what was wrong."""

    detail: str


class HistoryEntry(BaseModel):
    """One line of a watch's history."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    at: float
    from_: str | None = Field(None, alias="from")
    to: str
    raw: str | None = None
    note: str | None = None


@dataclass
class WatchDetail(Watch):
    """A watch with its history, oldest first."""

    history: list[HistoryEntry] = field(default_factory=list)


class WatchPage(BaseModel):
    items: list[Watch]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end. A page may hold fewer "
        "than `limit` watches with a cursor still to follow."
    )


class Registered(BaseModel):
    watch: Watch
    created: bool = Field(description="false: the task was already watched (idempotent)")


class BatchItem(BaseModel):
    """What became of one registration of a batch, at the same index as in the request."""

    status: str = Field(
        description="created; exists (already watched: `watch_id` is that watch); refused "
        "(`error` says why, and the item is kept in the dead letters)",
        json_schema_extra={"enum": ["created", "exists", "refused"]},
    )
    watch_id: str | None = Field(None, description="absent when refused")
    error: str | None = Field(None, description="only when refused")


class BatchRegistered(BaseModel):
    created: int
    exists: int
    refused: int
    results: list[BatchItem] = Field(description="one per registration sent, in its order")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    abort: bool = Field(False, description="also abort the remote task on its platform")


class Cancelled(BaseModel):
    watch: Watch
    cancelled: bool = Field(description="false: the watch had already ended")


LABEL_FILTER = "^[^=]+="  # key=value: a key of at least one character, then anything


def _whole(value: object) -> object:
    """A whole float is the integer JSON Schema says it is (``3.0``); the rest is judged as
    sent (strictly: no ``"3"``)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class BulkRequest(BaseModel):
    """Which watches a bulk action takes (the filters of `GET /v1/watches`), and how many."""

    model_config = ConfigDict(extra="forbid")

    state: State | None = None
    provider: str | None = None
    label: list[Annotated[str, StringConstraints(pattern=LABEL_FILTER)]] = Field(
        [], description="key=value; every one must match"
    )
    q: str | None = Field(None, description="substring of id, remote id or name")
    created_after: float | None = Field(None, description="unix seconds, inclusive")
    created_before: float | None = Field(None, description="unix seconds, exclusive")
    updated_after: float | None = None
    updated_before: float | None = None
    limit: Annotated[int, BeforeValidator(_whole)] = Field(
        100, ge=1, le=500, description="matching watches handled per request"
    )
    cursor: str | None = Field(None, description="`next_cursor` of the previous request")
    dry_run: bool = Field(False, description="change nothing; say what would change")


class BulkCancelRequest(BulkRequest):
    abort: bool = Field(False, description="also abort the remote tasks of those cancelled")


class BulkResult(BaseModel):
    matched: int = Field(description="watches the filter matched in this batch")
    changed: int = Field(description="cancelled or re-armed (would be, on a dry run)")
    ids: list[str] = Field(description="the watches changed, oldest created first")
    skipped: dict[str, int] = Field(description="matched but left alone, by their state")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to go on; null when no matching watch is left. Repeating "
        "a request is harmless: what was already changed is skipped."
    )
    dry_run: bool


class Rearmed(BaseModel):
    watch: Watch


class Forgotten(BaseModel):
    id: str = Field(description="the watch removed")
    state: str = Field(description="the state it was in")


class CircuitStats(BaseModel):
    """A provider's circuit breaker: ``open`` while only probes are sent."""

    state: Literal["closed", "open"]
    failures: int  # outage failures in a row
    opened_at: float | None = None
    closed_at: float | None = None
    probe_at: float | None = None  # while open: when the next probe may go
    probes: int = 0
    opened: int = 0


class ProviderStats(BaseModel):
    counts: dict[str, int]
    polls_per_s: float
    errors_per_s: float
    rate_limit_waits_per_s: float
    failing: int = 0  # live watches whose last checks failed
    circuit: CircuitStats | None = None


class WorkerBeat(BaseModel):
    last_seen: float
    age_seconds: float
    queues: list[str] | None = None  # None: a worker too old to say which queues it consumes


class Stats(BaseModel):
    counts: dict[str, int]
    providers: dict[str, ProviderStats]
    dispatch_lag_seconds: float
    workers: dict[str, WorkerBeat]


class Health(BaseModel):
    ok: bool


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error codes, all shaped as :class:`Error`."""
    described = {
        401: "Missing or wrong bearer token",
        404: "No such watch",
        409: "The watch is in a state that does not allow this",
        413: "Too many items in one request; `detail` says the limit",
        422: "Invalid input; `detail` says what and why",
        503: "Redis is unavailable",
    }
    return {code: {"model": Error, "description": described[code]} for code in codes}
