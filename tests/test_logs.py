"""Logging: JSON lines off a terminal, and no configured secret ever printed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from taskwarden import logs
from taskwarden.config.settings import load_settings


def test_secrets_are_redacted_from_every_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token, an S3 key and the Redis password are masked in structlog and stdlib records."""
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__GEOBOX__TOKEN", "tok-123456789")
    monkeypatch.setenv("TASKWARDEN_S3__SECRET_ACCESS_KEY", "s3-secret-abcdef")
    monkeypatch.setenv("TASKWARDEN_REDIS_URL", "redis://:redis-pass-xyz@127.0.0.1:6379/0")
    settings = load_settings()
    assert set(logs.secrets_of(settings)) == {"tok-123456789", "s3-secret-abcdef", "redis-pass-xyz"}
    out = io.StringIO()
    logs.configure(settings, stream=out)
    logs.get("t").info(
        "poll.done", error="401 for token tok-123456789", url="redis://:redis-pass-xyz@h"
    )
    logging.getLogger("some.library").warning("connecting with %s", "s3-secret-abcdef")
    logging.getLogger("httpx").info("HTTP Request: GET https://x/?apikey=tok-123456789")
    text = out.getvalue()
    assert (
        "tok-123456789" not in text
        and "s3-secret-abcdef" not in text
        and "redis-pass-xyz" not in text
    )
    event = json.loads(text.splitlines()[0])
    assert event["event"] == "poll.done" and event["error"] == "401 for token ***"
    assert "connecting with ***" in text
    assert "HTTP Request" not in text  # httpx's per-request INFO lines are silenced
