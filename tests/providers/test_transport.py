"""The sharded transport: many small httpx pools behind one client, on the real simulator."""

from __future__ import annotations

import asyncio

import httpx

from taskwarden.config.settings import HttpSettings
from taskwarden.net.client import build_client
from taskwarden.net.transport import ShardedTransport
from taskwarden.simulator.server import SimulatorServer

HEADERS = {"Authorization": "Bearer sim-token"}


def test_requests_spread_over_pools_and_respect_the_connection_cap(sim: SimulatorServer) -> None:
    """40 slow requests at once open at most max_connections connections, spread over shards."""
    tasks = sim.geobox.add_tasks([{"pending_seconds": 60} for _ in range(40)])
    fault = sim.inject(
        kind="delay", delay=0.2, count=None, route="tasks/{uuid}/", platform="geobox"
    )
    sim.stats.reset()
    transport = ShardedTransport(max_connections=8, per_shard=2)

    async def go() -> list[int]:
        async with httpx.AsyncClient(transport=transport, headers=HEADERS) as client:
            answers = await asyncio.gather(
                *(client.get(f"{sim.geobox_url}tasks/{t.uuid}/") for t in tasks)
            )
            busy = list(transport._busy)
        assert busy == [0, 0, 0, 0]  # every response read and released
        return [a.status_code for a in answers]

    try:
        assert asyncio.run(go()) == [200] * 40
    finally:
        sim.faults.remove(fault)
    assert 4 < sim.stats.max_connections <= 8


def test_streamed_download_releases_its_shard_when_closed(sim: SimulatorServer) -> None:
    """A streaming response counts as busy until its body is closed, then frees the shard."""
    task = sim.geobox.add_task(file_size=300_000)
    client = build_client(HttpSettings(max_connections=4, connections_per_pool=2))
    transport = client._transport
    assert isinstance(transport, ShardedTransport)

    async def go() -> int:
        size = 0
        url = f"{sim.geobox_url}files/{task.output_uuid}/download/"
        async with client.stream("GET", url, headers=HEADERS) as response:
            assert transport._busy == [1, 0]
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        assert transport._busy == [0, 0]
        await client.aclose()
        return size

    assert asyncio.run(go()) == 300_000
