"""Start taskwarden's processes: the beat scheduler, a control worker (registrations and
dispatch), a poll worker, an archive worker and (optionally) the HTTP API.

Used by ``taskwarden run``, the demo, the end-to-end tests and the benchmarks, so that all of
them run the very same processes a deployment runs. Settings travel as ``TASKWARDEN_*``
environment variables, as they would in a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from taskwarden import keys


def commands(
    poll_concurrency: int | None = None, archive_concurrency: int = 2, api: bool = False
) -> dict[str, list[str]]:
    """The command lines of the processes, by role."""
    me = [sys.executable, "-m", "taskwarden"]
    poll = [*me, "worker", "-Q", ",".join(keys.POLL_QUEUES), "-n", f"poll-{os.getpid()}@%h"]
    if poll_concurrency:
        poll += ["-c", str(poll_concurrency)]
    archive = [*me, "worker", "-Q", keys.QUEUE_ARCHIVE, "-n", f"archive-{os.getpid()}@%h",
               "-c", str(archive_concurrency)]  # fmt: skip
    # its own process: a poll worker whose every slot waits on a platform that hangs still
    # takes registrations and dispatches the other providers' checks
    control = [*me, "worker", "-Q", ",".join(keys.CONTROL_QUEUES), "-n",
               f"control-{os.getpid()}@%h", "-c", "1"]  # fmt: skip
    roles = {"beat": [*me, "beat"], "control": control, "poll": poll, "archive": archive}
    if api:
        roles["api"] = [*me, "api"]  # on TASKWARDEN_API__HOST and __PORT
    return roles


class Service:
    """The running processes, kept running: one that exits on its own is started again.

    Celery's Redis transport can turn a broker outage into an "unrecoverable" worker exit (a
    long-standing class of kombu bugs); a supervisor is what brings the worker back, as a
    container's restart policy does in a deployment (``taskwarden worker`` exits non-zero then,
    so ``restart: on-failure`` sees it). A process that keeps dying within
    ``MIN_UPTIME`` of its start is given up after ``MAX_QUICK_DEATHS`` tries, and ``alive()``
    turns false. A context manager: leaving it stops everything (SIGTERM, then SIGKILL).
    """

    MIN_UPTIME = 10.0
    MAX_QUICK_DEATHS = 5

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        poll_concurrency: int | None = None,
        archive_concurrency: int = 2,
        log_dir: Path | None = None,
        api: bool = False,
    ) -> None:
        self.env = {**os.environ, **env}
        self.argvs = commands(poll_concurrency, archive_concurrency, api)
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.restarts: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._quick_deaths: dict[str, int] = {}
        self._logs: list[IO[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{role}.log", "ab")  # noqa: SIM115 closed in stop()
            self._logs.append(out)
        self._started[role] = time.monotonic()
        return subprocess.Popen(
            self.argvs[role], env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )

    def start(self) -> Service:
        self.processes = [self._spawn(role) for role in self.argvs]
        self._watcher = threading.Thread(
            target=self._watch, name="taskwarden-supervisor", daemon=True
        )
        self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for index, role in enumerate(self.argvs):
                    if self._stopping.is_set() or self.processes[index].poll() is None:
                        continue
                    lived = time.monotonic() - self._started[role]
                    deaths = self._quick_deaths.get(role, 0) + 1 if lived < self.MIN_UPTIME else 0
                    self._quick_deaths[role] = deaths
                    if deaths >= self.MAX_QUICK_DEATHS:
                        continue  # crash-looping: leave it dead, alive() tells
                    self.restarts[role] = self.restarts.get(role, 0) + 1
                    self.processes[index] = self._spawn(role)

    def alive(self) -> bool:
        """False once a process was given up on (crash-looping); a death about to be restarted
        does not count."""
        with self._lock:
            return all(n < self.MAX_QUICK_DEATHS for n in self._quick_deaths.values())

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
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
