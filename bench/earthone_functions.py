"""What watching a whole EarthOne function costs the platform, by its number of jobs.

    python bench/earthone_functions.py [--jobs 50,500,5000] [--checks 5]

For each size, scripts a function on the simulator (in this process, on loopback) whose jobs
end one after another, checks it ``--checks`` times as it runs (the simulation clock moved
between checks) with the adapter a worker builds, then lists and reads its whole archive.
Prints the requests the platform served per check (the function document with its job
statistics, plus a count while no job has ended; tokens left out), the requests and
seconds of the archive, and the requests per job it cost. The point: a check does not grow
with the jobs; the archive does, a few requests per job.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from taskwarden.config import EarthOneSettings, HttpSettings, ProvidersSettings, Settings
from taskwarden.net.client import build_client
from taskwarden.providers.base import Target
from taskwarden.providers.earthone import adapter
from taskwarden.simulator.server import SimulatorServer

P = "earthone"


def settings_for(sim: SimulatorServer) -> Settings:
    env = sim.earthone.env(sim.url)
    v = "TASKWARDEN_PROVIDERS__EARTHONE__"
    own = EarthOneSettings(
        platform_url=env[f"{v}PLATFORM_URL"],
        iam_url=env[f"{v}IAM_URL"],
        client_id=env[f"{v}CLIENT_ID"],
        refresh_token=env[f"{v}REFRESH_TOKEN"],
    )
    return Settings(providers=ProvidersSettings(earthone=own), http=HttpSettings())


async def measure(sim: SimulatorServer, jobs: int, checks: int) -> dict[str, float]:
    function = sim.earthone.add_function(
        jobs=jobs, failures=jobs // 100, stagger=1.0, job={"running_seconds": 0, "file_size": 256}
    )
    target = Target(f"function:{function.function_id}")
    settings = settings_for(sim)
    async with build_client(settings.http) as client:
        provider = adapter.build(settings, client)
        await provider.api.tokens.current()  # the token is not the check's cost
        per_check = []
        for _ in range(checks):
            before = _api_requests(sim)
            seen = await provider.fetch_status(target)
            per_check.append(_api_requests(sim) - before)
            sim.clock.advance(jobs / checks)
        sim.clock.advance(jobs)
        assert (await provider.fetch_status(target)).remote == "succeeded"
        before, started = _api_requests(sim), time.perf_counter()
        outputs = 0
        for ref in await provider.list_outputs(target):
            async with provider.open_output(target, ref) as stream:
                async for _ in stream.chunks:
                    pass
            outputs += 1
        archive_s = time.perf_counter() - started
        archive_requests = _api_requests(sim) - before
    del seen
    return {
        "check_max": max(per_check),
        "check_mean": sum(per_check) / len(per_check),
        "archive_requests": archive_requests,
        "archive_s": archive_s,
        "outputs": outputs,
        "per_job": archive_requests / jobs,
    }


def _api_requests(sim: SimulatorServer) -> int:
    return sim.stats.count(platform=P) - sim.stats.count(platform=P, route="iam/token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="50,500,5000")
    parser.add_argument("--checks", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(n) for n in args.jobs.split(",")]
    print(f"{'jobs':>6} {'req/check (max, mean)':>22} {'archive req':>12} {'req/job':>8}"
          f" {'outputs':>8} {'archive s':>10}")  # fmt: skip
    with SimulatorServer() as sim:
        # the clock jumps by hours between checks here: tokens that outlive the run
        sim.earthone.configure({"token_ttl": 10**8})
        for jobs in sizes:
            sim.reset()
            row = asyncio.run(measure(sim, jobs, args.checks))
            print(f"{jobs:>6} {row['check_max']:>12.0f}, {row['check_mean']:>7.2f}"
                  f" {row['archive_requests']:>12.0f} {row['per_job']:>8.2f}"
                  f" {row['outputs']:>8.0f} {row['archive_s']:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
