"""What the benchmarks share: a simulator of the platforms in a process of its own.

The benchmarks are scripts (``python bench/<name>.py``), so this module is found beside them.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx


def start_simulator(port: int, wait: float = 30.0) -> subprocess.Popen[bytes]:
    """``taskwarden simulate`` on 127.0.0.1:``port``, once it answers (within ``wait`` s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "simulate", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_control/stats", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("simulator did not start")
