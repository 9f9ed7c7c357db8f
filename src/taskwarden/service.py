"""Start taskwarden's processes: the beat scheduler, a poll worker and an archive worker.

Used by ``taskwarden run``, the demo, the end-to-end tests and the benchmarks, so that all of
them run the very same processes a deployment runs. Settings travel as ``TASKWARDEN_*``
environment variables, as they would in a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from taskwarden import keys


def commands(
    poll_concurrency: int | None = None, archive_concurrency: int = 2
) -> dict[str, list[str]]:
    """The command lines of the three processes, by role."""
    me = [sys.executable, "-m", "taskwarden"]
    poll = [*me, "worker", "-Q", ",".join(keys.POLL_QUEUES), "-n", f"poll-{os.getpid()}@%h"]
    if poll_concurrency:
        poll += ["-c", str(poll_concurrency)]
    archive = [*me, "worker", "-Q", keys.QUEUE_ARCHIVE, "-n", f"archive-{os.getpid()}@%h",
               "-c", str(archive_concurrency)]  # fmt: skip
    return {"beat": [*me, "beat"], "poll": poll, "archive": archive}


class Service:
    """The running processes; a context manager that stops them (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        poll_concurrency: int | None = None,
        archive_concurrency: int = 2,
        log_dir: Path | None = None,
    ) -> None:
        self.env = {**os.environ, **env}
        self.argvs = commands(poll_concurrency, archive_concurrency)
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self) -> Service:
        for role, argv in self.argvs.items():
            out: IO[bytes] | None = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"{role}.log", "ab")  # noqa: SIM115 closed in stop()
                self._logs.append(out)
            self.processes.append(
                subprocess.Popen(
                    argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
                )
            )
        return self

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        for fh in self._logs:
            fh.close()
        self._logs.clear()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
