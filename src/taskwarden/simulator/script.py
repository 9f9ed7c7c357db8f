"""Scripted tasks, shared by every platform simulator: a timeline and deterministic outputs.

A :class:`Script` says how long a task stays pending, how long it runs (its progress rising
linearly to ``progress_total``), and how it ends. A :class:`ScriptedTask` plays it against the
simulation clock from the moment it was added; each platform renders the phase in its own
status words and JSON.

The bytes of a file output are a function of ``(seed, size)`` only: block ``i`` (1 MiB) is drawn
from a PRNG seeded with ``"{seed}:{i}"``, so a test knows the checksum without downloading, a
smaller output is a prefix of a larger one with the same seed, and a 100 MB output is streamed a
block at a time instead of being built in memory. Not cryptographic; only stable.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

Phase = Literal["pending", "running", "succeeded", "failed", "cancelled"]
Outcome = Literal["success_file", "success_asset", "failure", "aborted", "never"]
FINAL_PHASES = frozenset({"succeeded", "failed", "cancelled"})
_END: dict[str, Phase] = {
    "success_file": "succeeded",
    "success_asset": "succeeded",
    "failure": "failed",
    "aborted": "cancelled",  # the platform aborts it at the end of its run
}

BLOCK = 1 << 20
CHUNK = 256 * 1024  # what a download writes per ASGI message


class Script(BaseModel):
    """How a simulated task behaves; platforms extend it with their own fields.

    ``outcome`` ``never`` runs forever; ``file_*`` describe the output of ``success_file``, whose
    bytes come from ``seed`` (the platform's task id when None).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pending_seconds: float = Field(0.0, ge=0)
    running_seconds: float = Field(0.0, ge=0)
    progress_total: int = Field(100, ge=1)
    outcome: Outcome = "success_file"
    file_name: str = "output.bin"
    file_size: int = Field(1024, ge=0)
    content_type: str = "application/octet-stream"
    seed: str | None = None


S = TypeVar("S", bound=Script)


@dataclass(slots=True)
class ScriptedTask(Generic[S]):
    """A script being played: added at simulation time ``created`` (shown as wall-clock
    ``epoch``), maybe aborted ``aborted_at`` seconds later."""

    script: S
    seed: str
    created: float
    epoch: float
    aborted_at: float | None = None

    def phase(self, now: float) -> tuple[Phase, int]:
        """Where the task is at simulation time ``now``, and its progress ``current``."""
        script = self.script
        elapsed = now - self.created
        if self.aborted_at is not None:
            return "cancelled", self._current(self.aborted_at)
        if elapsed < script.pending_seconds:
            return "pending", 0
        if script.outcome == "never" or elapsed < script.pending_seconds + script.running_seconds:
            return "running", self._current(elapsed)
        return _END[script.outcome], script.progress_total

    def abort(self, now: float) -> bool:
        """Stop the task now; False (and nothing changes) when it had already ended."""
        if self.phase(now)[0] in FINAL_PHASES:
            return False
        self.aborted_at = now - self.created
        return True

    def started(self, now: float) -> float | None:
        """Wall-clock time the task started running, if it has."""
        ended = self.ended(now)
        pending = self.script.pending_seconds
        if self.phase(now)[0] == "pending" or (ended is not None and ended < self.epoch + pending):
            return None
        return self.epoch + pending

    def ended(self, now: float) -> float | None:
        """Wall-clock time the task reached its final phase, if it has."""
        if self.aborted_at is not None:
            return self.epoch + self.aborted_at
        if self.phase(now)[0] in FINAL_PHASES:
            return self.epoch + self.script.pending_seconds + self.script.running_seconds
        return None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the file output, without downloading it."""
        return output_sha256(self.seed, self.script.file_size)

    def output_bytes(self) -> bytes:
        return output_bytes(self.seed, self.script.file_size)

    def download(self) -> StreamingResponse:
        """The file output as a streamed download, its length and name announced."""
        script = self.script
        return download_response(self.seed, script.file_size, script.file_name, script.content_type)

    def _current(self, elapsed: float) -> int:
        script = self.script
        running = elapsed - script.pending_seconds
        if running <= 0:
            return 0
        if script.running_seconds <= 0:
            return script.progress_total
        share = running / script.running_seconds
        return min(script.progress_total, int(script.progress_total * share))


def iter_output(seed: str, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The output's bytes in order, ``chunk`` bytes at a time (the last chunk may be shorter)."""
    if size < 0 or chunk <= 0:
        raise ValueError("size must be >= 0 and chunk > 0")
    sent = 0
    index = 0
    while sent < size:
        block = random.Random(f"{seed}:{index}").randbytes(min(BLOCK, size - sent))
        for start in range(0, len(block), chunk):
            yield block[start : start + chunk]
        sent += len(block)
        index += 1


def output_bytes(seed: str, size: int) -> bytes:
    """The whole output in memory; for small outputs and tests."""
    return b"".join(iter_output(seed, size, BLOCK))


@lru_cache(maxsize=256)
def output_sha256(seed: str, size: int) -> str:
    """Hex SHA-256 of :func:`output_bytes` ``(seed, size)``, computed block by block."""
    digest = hashlib.sha256()
    for block in iter_output(seed, size, BLOCK):
        digest.update(block)
    return digest.hexdigest()


def download_response(seed: str, size: int, filename: str, content_type: str) -> StreamingResponse:
    """A streamed file download of an output, with its length and name announced."""
    headers = {"Content-Length": str(size), "Content-Disposition": content_disposition(filename)}
    return StreamingResponse(_chunks(seed, size), 200, headers, content_type)


def content_disposition(name: str) -> str:
    """``attachment; filename="…"``, plus an RFC 5987 ``filename*`` for non-ASCII names."""
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace('"', "_")
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


async def _chunks(seed: str, size: int) -> AsyncIterator[bytes]:
    for chunk in iter_output(seed, size):
        yield chunk
