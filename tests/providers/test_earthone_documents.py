"""What EarthOne's documents mean, table by table: pure functions, no network."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskwarden.errors import OutputInvalid
from taskwarden.lifecycle import Remote
from taskwarden.providers.earthone import adapter, documents


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-01T00:00:05Z", 1735689605.0),
        ("2025-01-01T00:00:05.5Z", 1735689605.5),
        ("2025-01-01T01:00:05+01:00", 1735689605.0),
        ("2025-01-01T00:00:05", 1735689605.0),  # naive: UTC (the SDK's fixtures send these)
        (1735689605, 1735689605.0),
        (None, None),
        ("", None),
        ("yesterday", None),
        (True, None),
    ],
)
def test_dates_are_read_as_the_sdk_reads_them(value: Any, expected: float | None) -> None:
    """ISO strings with Z, an offset or none (UTC), and unix numbers; anything else is None."""
    assert documents.parse_time(value) == expected


@pytest.mark.parametrize(
    ("stats", "total", "remote", "progress"),
    [
        ({"pending": 3, "success": 1}, None, Remote.RUNNING, 0.25),
        ({"running": 2, "failure": 2}, None, Remote.RUNNING, 0.5),
        ({"cancel": 1, "canceled": 3}, None, Remote.RUNNING, 0.75),
        ({"pending": 2, "running": 1}, 6, Remote.RUNNING, 0.5),  # active-only, with a count
        ({"pending": 0, "running": 0, "cancel": 0, "canceling": 0}, None, Remote.SUCCEEDED, 1.0),
        ({"success": 4, "timeout": 1}, None, Remote.SUCCEEDED, 1.0),
        ({}, None, Remote.SUCCEEDED, 1.0),
        ({"pending": "x", "running": -1, "success": 2}, None, Remote.SUCCEEDED, 1.0),
    ],
)
def test_function_progress_is_the_share_of_terminal_jobs(
    stats: dict[str, Any], total: int | None, remote: Remote, progress: float
) -> None:
    """Done when no job is pending, running, cancel or canceling; malformed counts dropped."""
    seen = documents.function_observation({"status": "ready", "job_statistics": stats}, total)
    assert (seen.remote, seen.progress) == (remote, progress)


@pytest.mark.parametrize(
    ("stats", "needed"),
    [
        ({"pending": 5}, True),
        ({"pending": 5, "running": 0, "cancel": 0, "canceling": 0}, True),
        ({"pending": 5, "success": 0}, False),
        ({"success": 5}, False),
        ({}, False),
    ],
)
def test_a_count_is_asked_only_when_the_statistics_leave_the_total_unknown(
    stats: dict[str, int], needed: bool
) -> None:
    """Active jobs with no terminal word counted: the number of jobs needs a count."""
    assert documents.needs_count({"job_statistics": stats}) is needed


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b'{"date": "2025-01-01T00:00:01Z", "log": "a"}\n'], "2025-01-01 00:00:01+00:00 a"),
        ([b'{"date": "2025-01-01T00:00:01.5Z", "log": "a"}\n{"date": "2025-01-01T00:00:02Z"',
          b', "log": "b"}'], "2025-01-01 00:00:01.500000+00:00 a\n2025-01-01 00:00:02+00:00 b"),
        ([b'\n{"date": "2025-01-01T00:00:01Z", "log": ""}\n\n'], "2025-01-01 00:00:01+00:00 "),
        ([b"plain text\r\n", b'{"no": "date"}\n'], 'plain text\n{"no": "date"}'),
        ([], ""),
    ],
)  # fmt: skip
def test_log_lines_render_as_job_log_prints_them(chunks: list[bytes], expected: str) -> None:
    """NDJSON split anywhere across chunks becomes `<date> <log>` lines; other lines stay."""
    text = documents.LogText()
    out = b"".join(text.feed(chunk) for chunk in chunks) + text.close()
    assert out.decode() == expected


def test_a_build_log_that_is_not_gzip_is_output_invalid() -> None:
    """The build log is gzip (Function.build_log decompresses it); garbage or a cut stream is
    OutputInvalid, not a crash."""

    async def body(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def inflate(*parts: bytes) -> bytes:
        return b"".join([chunk async for chunk in adapter._gunzip(body(*parts))])

    packed = gzip.compress(b"build ok\n")
    assert asyncio.run(inflate(packed[:5], packed[5:])) == b"build ok\n"
    with pytest.raises(OutputInvalid, match="not gzip"):
        asyncio.run(inflate(b"plain text"))
    with pytest.raises(OutputInvalid, match="cut short"):
        asyncio.run(inflate(packed[:-6]))
