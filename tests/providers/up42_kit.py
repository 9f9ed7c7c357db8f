"""What the UP42 adapter tests share: settings for a simulator, a provider built as a worker
builds it, and reading every output the way the archive does."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from taskwarden import net
from taskwarden.config.providers import ProvidersSettings, Up42Settings
from taskwarden.config.settings import HttpSettings, Settings
from taskwarden.net.client import build_client
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.up42 import adapter as up42
from taskwarden.simulator.server import SimulatorServer
from taskwarden.simulator.up42 import Up42Auth
from taskwarden.simulator.up42_jobs import Up42Job

T = TypeVar("T")
PROJECT = "sim-project"
PASSWORD = {"username": "sim-user", "password": SecretStr("sim-password")}


def reset(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator with UP42's default auth (tokens live 300 s)."""
    server.up42.configure(Up42Auth().model_dump())
    return server


def settings_for(
    server: SimulatorServer, tmp: Path | None = None, *, http: HttpSettings | None = None,
    **fields: Any,
) -> Settings:  # fmt: skip
    options: dict[str, Any] = {"base_url": server.up42_url, **PASSWORD}
    if "token" in fields or "project_id" in fields:
        options.pop("username"), options.pop("password")
    if tmp is not None:
        options["spool_dir"] = tmp
    options.update(fields)
    return Settings(
        providers=ProvidersSettings(up42=Up42Settings(**options)),
        # two small pools: building the default fifty costs a second per test
        http=http
        or HttpSettings(
            read_timeout=5.0, connect_timeout=2.0, max_connections=4, connections_per_pool=2
        ),
    )


def call(
    server: SimulatorServer,
    action: Callable[[up42.Up42Provider], Awaitable[T]],
    *,
    guard: bool = False,
    http: HttpSettings | None = None,
    **fields: Any,
) -> T:
    """Run ``action`` on a provider built as a worker builds it, on a fresh client and loop
    (with ``guard``, the URL guard installed as the poll and archive workers install it)."""
    settings = settings_for(server, http=http, **fields)

    async def main() -> T:
        async with build_client(settings.http) as client:
            if guard:
                net.Guard(net.policy_for(settings, "up42")).install(client)
            return await action(up42.build(settings, client))

    return asyncio.run(main())


def job_target(job: Up42Job) -> Target:
    return Target(job.id, {"project_id": job.spec.project_id})


def task_target(job: Up42Job, index: int = 0) -> Target:
    return Target(job.tasks[index].id, {"project_id": job.spec.project_id, "job_id": job.id})


async def read_all(
    provider: up42.Up42Provider, target: Target, refs: Sequence[OutputRef]
) -> dict[str, bytes]:
    """Open every ref that is not skipped, as the archive does: name (the platform's file
    name when it gives one) → bytes."""
    got: dict[str, bytes] = {}
    for ref in refs:
        if ref.skipped is not None:
            continue
        async with provider.open_output(target, ref) as stream:
            body = b"".join([chunk async for chunk in stream.chunks])
        assert stream.length in (None, len(body))
        got[stream.filename or ref.name] = body
    return got


def archive(server: SimulatorServer, target: Target, **fields: Any) -> dict[str, bytes]:
    """List and read every output, as the archive does: name → bytes."""

    async def run(provider: up42.Up42Provider) -> dict[str, bytes]:
        return await read_all(provider, target, await provider.list_outputs(target))

    return call(server, run, **fields)


def listing(server: SimulatorServer, target: Target, **fields: Any) -> list[OutputRef]:
    """The outputs listed (nothing opened)."""

    async def run(provider: up42.Up42Provider) -> list[OutputRef]:
        return list(await provider.list_outputs(target))

    return call(server, run, **fields)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
