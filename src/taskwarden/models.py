"""The records taskwarden keeps: a validated registration, and the watch it becomes."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskwarden.config import RetryOverride
from taskwarden.errors import InvalidRegistration
from taskwarden.lifecycle import ArchiveMode, Observation, State, WatchView

MAX_PARAMS_BYTES = 16 * 1024
MAX_LABELS = 32
MAX_TIMEOUT = 10 * 366 * 24 * 3600.0  # ten years: anything longer is a unit mistake
MAX_DETAILS_BYTES = 2048  # of a check's ``details`` as JSON: small facts, never whole logs

#: The hash field of each record field kept by name here (the one table to edit to rename one):
#: the final state an archive run lands on, what checks report of the platform's own record, and
#: the progress track the schedule aims with (only on watches whose platform reports progress).
FIELDS = {
    "outcome": "outcome",
    "remote_created_at": "remote_created_at",
    "remote_started_at": "remote_started_at",
    "remote_ended_at": "remote_ended_at",
    "details": "details",
    "retention": "retention",
    "last_error_kind": "last_error_kind",
    "progress_at": "progress_at",
    "progress_rate": "progress_rate",
}
_ARCHIVE_MODES: dict[str, ArchiveMode] = {
    "success": "success",
    "final": "final",
    "0": False,
    "1": "success",  # a watch registered when ``archive`` was a boolean
}


def watch_id(provider: str, remote_id: str) -> str:
    """The id of the one watch for a (provider, remote id): registration is idempotent by it."""
    digest = hashlib.sha256(f"{provider}\x00{remote_id}".encode()).hexdigest()
    return "w" + digest[:16]


# what validate_remote_id takes, for the documents: any of those characters, but not "." or ".."
_ID_CHAR = r"[^/\\\x00-\x1f\x7f]"
_NOT_DOT = r"[^./\\\x00-\x1f\x7f]"
REMOTE_ID_PATTERN = rf"^({_NOT_DOT}{_ID_CHAR}*|[.]{_NOT_DOT}{_ID_CHAR}*|[.][.]{_ID_CHAR}+)$"
# a webhook: http(s), a host (a name, an IPv4 address or a bracketed IPv6 one; no user:password@),
# a port, and a path, query or fragment without spaces or control characters
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zero: Python refuses one
_V4 = rf"({_OCTET}[.]){{3}}{_OCTET}"
_H = "[0-9A-Fa-f]{1,4}"
_V6 = (
    rf"({_H}:){{7}}{_H}|({_H}:){{1,7}}:|({_H}:){{1,6}}:{_H}|({_H}:){{1,5}}(:{_H}){{1,2}}"
    rf"|({_H}:){{1,4}}(:{_H}){{1,3}}|({_H}:){{1,3}}(:{_H}){{1,4}}|({_H}:){{1,2}}(:{_H}){{1,5}}"
    rf"|{_H}:(:{_H}){{1,6}}|:((:{_H}){{1,7}}|:)|::([Ff]{{4}}(:0{{1,4}})?:)?{_V4}|({_H}:){{1,4}}:{_V4}"
)
WEBHOOK_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9._~!$&'()*+,;=%-]+|\[({_V6})\])(:[0-9]*)?"
    r"([/?#][^\x00-\x20\x7f]*)?$"
)
_WEBHOOK = re.compile(WEBHOOK_PATTERN)


def validate_remote_id(remote_id: str) -> str | None:
    """Return why ``remote_id`` is unacceptable, or None. Ids become archive path segments."""
    if not remote_id or len(remote_id) > 256:
        return "remote_id must be 1 to 256 characters"
    if remote_id in (".", "..") or "/" in remote_id or "\\" in remote_id:
        return "remote_id must not contain '/' or '\\' or be '.' or '..'"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in remote_id):
        return "remote_id must not contain control characters"
    return None


class Registration(BaseModel):
    """A request to watch a remote task, from any door (queue message, CLI, API)."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=64)
    remote_id: str = Field(
        json_schema_extra={"minLength": 1, "maxLength": 256, "pattern": REMOTE_ID_PATTERN}
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=f"what the provider needs besides the id; at most {MAX_PARAMS_BYTES} bytes "
        "as JSON. A provider may refuse a target by its own rules (422, saying why).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={
            "maxProperties": MAX_LABELS,
            "propertyNames": {"minLength": 1, "maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 256},
        },
    )
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT)
    archive: ArchiveMode = Field(
        "success",
        description='"success": archive the outputs of a task that succeeded; "final": also '
        "archive what a task that failed, was cancelled by its platform or timed out left "
        "behind (its provider's diagnostics); false: archive nothing. true (what producers "
        'sent when this was a boolean) means "success".',
        json_schema_extra={"enum": ["success", "final", False, True]},
    )
    abort_on_timeout: bool = False  # past the timeout, also abort the remote task
    webhook: str | None = Field(  # called on the final state
        None, max_length=2048, json_schema_extra={"pattern": WEBHOOK_PATTERN}
    )
    retry: RetryOverride | None = None  # this watch's retry policy, over its provider's
    retention: float | None = Field(
        None,
        gt=0,
        le=MAX_TIMEOUT,
        description="seconds this watch is kept once final, before it is removed (its archive "
        "stays); unset: TASKWARDEN_RETENTION__<STATE>, else TASKWARDEN_RETENTION__FINISHED",
    )

    @field_validator("remote_id")
    @classmethod
    def _remote_id(cls, value: str) -> str:
        problem = validate_remote_id(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("archive", mode="before")
    @classmethod
    def _archive(cls, value: object) -> object:
        # by identity: 0, 1 and "true" are not booleans here, and true is the old "success"
        if value is True:
            return "success"
        if value is False or (isinstance(value, str) and value in ("success", "final")):
            return value
        raise ValueError('must be "success", "final" or false (true means "success")')

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (user:password@): it is shown to readers")
        if not _WEBHOOK.fullmatch(value):
            raise ValueError(
                "must be an http(s) URL to a host name or IPv4 address, without spaces or "
                "control characters"
            )
        return value

    @field_validator("retry", mode="before")
    @classmethod
    def _retry_as_json(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        # the settings take "A,B" for a list of kinds; a registration is JSON and says a list
        if isinstance(value.get("non_retryable"), str):
            raise ValueError("retry.non_retryable must be a list of error kinds")
        attempts = value.get("maximum_attempts")
        if isinstance(attempts, float) and attempts.is_integer():
            return {**value, "maximum_attempts": int(attempts)}  # 3.0 is a JSON integer
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"params must be JSON: {exc}") from None
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"params is {size} bytes of JSON; at most {MAX_PARAMS_BYTES}")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for key, val in value.items():
            if not key or len(key) > 64 or len(val) > 256:
                raise ValueError("label keys are 1-64 characters, values at most 256")
        return value

    @field_validator("timeout", "retention")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value

    @classmethod
    def parse(cls, data: object, known_providers: list[str]) -> Registration:
        """Validate untrusted input, raising InvalidRegistration with every reason."""
        if not isinstance(data, dict):
            raise InvalidRegistration(f"a registration is a JSON object, got {type(data).__name__}")
        try:
            # strictly, as the schema says: no "1" for a number, no 0 or "yes" for a boolean
            reg = cls.model_validate(data, strict=True)
        except ValidationError as exc:
            raise InvalidRegistration(f"invalid registration: {reasons(exc)}") from None
        if reg.provider not in known_providers:
            raise InvalidRegistration(
                f"unknown provider {reg.provider!r}; known: {', '.join(known_providers)}"
            )
        return reg


def reasons(exc: ValidationError, whole: str = "body") -> str:
    """Every reason pydantic gave, in one sentence: ``where: what; ...`` (``whole`` names the
    input itself, when the reason is about all of it)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors()
    )


@dataclass
class Watch:
    """One tracked remote task, as stored in Redis."""

    id: str
    provider: str
    remote_id: str
    state: State
    created_at: float
    updated_at: float
    params: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    archive: ArchiveMode = "success"
    abort_on_timeout: bool = False
    timeout: float | None = None
    deadline: float | None = None
    raw_status: str | None = None
    progress: float | None = None
    name: str | None = None
    interval: float | None = None
    errors: int = 0
    polls: int = 0
    last_error: str | None = None
    # the error-tree class of the failed check that wrote ``last_error`` ("ProviderUnavailable",
    # "TaskNotFound"...); None for the platform's own words or a failure of an older version
    last_error_kind: str | None = None
    next_poll_at: float | None = None
    finished_at: float | None = None
    fence: int = 0
    manifest: str | None = None  # key of manifest.json once archived
    outputs: list[dict[str, Any]] = field(default_factory=list)
    webhook: str | None = None  # this watch's own webhook URL
    webhook_status: str | None = None  # delivered, retrying or failed (see taskwarden.webhooks)
    webhook_error: str | None = None  # why the last delivery attempt failed
    webhook_attempts: int = 0
    retry: dict[str, Any] | None = None  # the registration's retry overrides (RetryOverride)
    failing_since: float | None = None  # when the current run of failed checks began
    # the final state the archive run of an ``archiving`` watch lands on (kept after it has)
    outcome: State | None = None
    # the platform's own record of the task, from the checks that report them: its times (unix
    # seconds) and small facts (an exit code, a failure reason), replaced by each such check
    remote_created_at: float | None = None
    remote_started_at: float | None = None
    remote_ended_at: float | None = None
    details: dict[str, Any] | None = None
    retention: float | None = None  # the registration's own retention (seconds once final)
    # when ``progress`` was first seen at its value, and the rate (fraction per second) between
    # the last two values: what the next check's time is predicted from
    progress_at: float | None = None
    progress_rate: float | None = None

    def view(self) -> WatchView:
        return WatchView(
            state=self.state,
            raw_status=self.raw_status,
            progress=self.progress,
            interval=self.interval,
            errors=self.errors,
            deadline=self.deadline,
            archive=self.archive,
            failing_since=self.failing_since,
            outcome=self.outcome,
            progress_at=self.progress_at,
            progress_rate=self.progress_rate,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Watch:
        def num(key: str) -> float | None:
            value = raw.get(key, "")
            return float(value) if value else None

        return cls(
            id=raw["id"],
            provider=raw["provider"],
            remote_id=raw["remote_id"],
            state=State(raw["state"]),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            params=json.loads(raw.get("params") or "{}"),
            labels=json.loads(raw.get("labels") or "{}"),
            archive=_ARCHIVE_MODES.get(raw.get("archive") or "1", "success"),
            abort_on_timeout=raw.get("abort_on_timeout") == "1",
            timeout=num("timeout"),
            deadline=num("deadline"),
            raw_status=raw.get("raw_status") or None,
            progress=num("progress"),
            name=raw.get("name") or None,
            interval=num("interval"),
            errors=int(raw.get("errors") or 0),
            polls=int(raw.get("polls") or 0),
            last_error=raw.get("last_error") or None,
            last_error_kind=raw.get(FIELDS["last_error_kind"]) or None,
            next_poll_at=num("next_poll_at"),
            finished_at=num("finished_at"),
            fence=int(raw.get("fence") or 0),
            manifest=raw.get("manifest") or None,
            outputs=json.loads(raw.get("outputs") or "[]"),
            webhook=raw.get("webhook") or None,
            webhook_status=raw.get("webhook_status") or None,
            webhook_error=raw.get("webhook_error") or None,
            webhook_attempts=int(raw.get("webhook_attempts") or 0),
            retry=json.loads(raw["retry"]) if raw.get("retry") else None,
            failing_since=num("failing_since"),
            outcome=State(raw[FIELDS["outcome"]]) if raw.get(FIELDS["outcome"]) else None,
            remote_created_at=num(FIELDS["remote_created_at"]),
            remote_started_at=num(FIELDS["remote_started_at"]),
            remote_ended_at=num(FIELDS["remote_ended_at"]),
            details=json.loads(raw[FIELDS["details"]]) if raw.get(FIELDS["details"]) else None,
            retention=num(FIELDS["retention"]),
            progress_at=num(FIELDS["progress_at"]),
            progress_rate=num(FIELDS["progress_rate"]),
        )


def observed_fields(seen: Observation) -> dict[str, object]:
    """The hash fields a check's observation sets: the platform's timestamps it reports (finite
    ones), and its ``details`` (replacing the last; a marker instead when they are not JSON or
    larger than :data:`MAX_DETAILS_BYTES`)."""
    fields: dict[str, object] = {}
    for name in ("remote_created_at", "remote_started_at", "remote_ended_at"):
        value = getattr(seen, name)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            fields[FIELDS[name]] = float(value)
    if seen.details is not None:
        fields[FIELDS["details"]] = _small_details(seen.details)
    return fields


def _small_details(details: Any) -> dict[str, Any]:
    try:
        text = json.dumps(dict(details), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        return {"dropped": f"the platform's details are not JSON: {exc}"}
    if len(text.encode()) > MAX_DETAILS_BYTES:
        return {
            "dropped": f"{len(text.encode())} bytes of details, over the {MAX_DETAILS_BYTES} kept"
        }
    loaded: dict[str, Any] = json.loads(text)
    return loaded


_COMPACT = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps with
# separators builds an encoder per call, which was a good part of a registration's cost


def encode(value: object) -> str:
    """A hash field value: '' for None, JSON for containers, '1'/'0' for bools."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict | list):
        return "{}" if value == {} else _COMPACT(value)
    return str(value)


def history_entry(
    now: float, old: State | None, new: State, raw: str | None, note: str | None
) -> str:
    """One line of a watch's history (the ``history:<id>`` list), as JSON."""
    entry = {"at": now, "from": old, "to": new, "raw": raw, "note": note}
    return _COMPACT(entry)
