"""The platforms' own times of a task, as the unix seconds an Observation carries.

Platforms write ISO-8601 in several dialects: ``2024-05-01T10:00:00Z`` (JSON:API, Node's
``toISOString()``), with an offset, or naive (Geobox's FastAPI service, which the SDK parses as
naive UTC). A naive time is read as UTC; anything unreadable is None, never an error: a
timestamp is decoration, and a status check must not fail over one.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def epoch_seconds(value: Any) -> float | None:
    """``value`` (an ISO-8601 string, or unix seconds) as unix seconds; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
