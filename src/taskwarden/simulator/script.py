"""Deterministic output bytes, so a test can know a file's checksum without downloading it.

The bytes of an output are a function of ``(seed, size)`` only: block ``i`` (1 MiB) is drawn
from a PRNG seeded with ``"{seed}:{i}"``, so any range can be produced without the ones before
it, a smaller output is a prefix of a larger one with the same seed, and a 100 MB output is
streamed a block at a time instead of being built in memory. Not cryptographic; only stable.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from functools import lru_cache

BLOCK = 1 << 20
CHUNK = 256 * 1024  # what the simulators write per ASGI message


def _block(seed: str, index: int, length: int) -> bytes:
    return random.Random(f"{seed}:{index}").randbytes(length)


def iter_output(seed: str, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The output's bytes in order, ``chunk`` bytes at a time (the last chunk may be shorter)."""
    if size < 0 or chunk <= 0:
        raise ValueError("size must be >= 0 and chunk > 0")
    sent = 0
    index = 0
    while sent < size:
        block = _block(seed, index, min(BLOCK, size - sent))
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
