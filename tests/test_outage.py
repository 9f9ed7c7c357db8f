"""Platform outages are survived: a real warden against the Geobox simulator answering 503 to
every request for longer than the old retry budget (8 attempts), with and without the circuit
breaker. Assertions are on what the store and the simulator recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskwarden.config.settings import RetrySettings
from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.geobox import GeoboxTask
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden, wait_for

pytestmark = pytest.mark.slow

OLD_ATTEMPTS = 8  # the default budget that turned a two-minute outage into errors
OUTAGE = {
    "TASKWARDEN_HTTP__RETRIES": "0",  # one request per check: the counts below are checks
    # the default's (warden_env sets 5 for fast tests): bounded by a day, not by a count
    "TASKWARDEN_RETRY__MAXIMUM_ATTEMPTS": str(RetrySettings().maximum_attempts),
    "TASKWARDEN_RETRY__INITIAL_INTERVAL": "0.05",
    "TASKWARDEN_RETRY__MAXIMUM_INTERVAL": "0.2",
}


def start(warden: Warden, server: SimulatorServer, n: int) -> list[GeoboxTask]:
    """``n`` tasks that succeed 3 s after they start, watched until every one is running."""
    tasks = [server.geobox.add_task(running_seconds=3, file_size=1000) for _ in range(n)]
    for task in tasks:
        warden.send_track(provider="geobox", remote_id=task.uuid)
    ids = [watch_id("geobox", t.uuid) for t in tasks]

    def running() -> bool:
        return all((w := warden.store.get(i)) is not None and w.state is State.RUNNING for i in ids)

    wait_for(running, timeout=60)
    return tasks


def geobox_requests(server: SimulatorServer) -> int:
    return server.stats.count(platform="geobox")


def errors_of(warden: Warden, tasks: list[GeoboxTask]) -> list[int]:
    watches = warden.store.get_many([watch_id("geobox", t.uuid) for t in tasks])
    return [w.errors if w is not None else -1 for w in watches]


def end_as_scripted(warden: Warden, tasks: list[GeoboxTask]) -> None:
    for task in tasks:
        watch = warden.wait_final(watch_id("geobox", task.uuid), timeout=90)
        assert (watch.state, watch.errors, watch.failing_since) == (State.SUCCEEDED, 0, None)
        assert task.sha256 in {o["sha256"] for o in watch.outputs}


def test_running_watches_survive_an_outage_longer_than_the_old_budget_and_show_it(
    tmp_path: Path, server: SimulatorServer
) -> None:
    """Without the breaker, 4 running watches fail far more than 8 checks in a row through a
    503 outage, are shown failing meanwhile (ls marker, show, stats), and succeed after it."""
    env = {**OUTAGE, "TASKWARDEN_CIRCUIT__ENABLED": "false"}
    with running_warden(tmp_path, server, **env) as warden:
        tasks = start(warden, server, 4)
        fault = server.inject(kind="status", status=503, platform="geobox", count=None)
        wait_for(lambda: min(errors_of(warden, tasks)) > 2 * OLD_ATTEMPTS, timeout=60)

        assert warden.store.failing_counts(["geobox"]) == {"geobox": 4}
        listing = warden.cli("ls", "--provider", "geobox")
        assert listing.returncode == 0 and listing.stdout.count("running \N{WARNING SIGN}") == 4
        shown = warden.cli("show", watch_id("geobox", tasks[0].uuid))
        assert "failed checks in a row, since" in shown.stdout
        stats = json.loads(warden.cli("stats", "--json").stdout)
        assert stats["providers"]["geobox"]["failing"] == 4
        assert stats["providers"]["geobox"]["circuit"] == "closed"
        watches = warden.store.get_many([watch_id("geobox", t.uuid) for t in tasks])
        assert {w.state for w in watches if w is not None} == {State.RUNNING}

        server.faults.remove(fault)
        end_as_scripted(warden, tasks)
        assert warden.store.failing_counts(["geobox"]) == {"geobox": 0}


def test_an_open_circuit_sends_only_probes_and_closes_when_the_platform_answers(
    tmp_path: Path, server: SimulatorServer
) -> None:
    """With the breaker, an outage opens geobox's circuit; while it is open the simulator sees
    one request per probe and no watch's failure count moves; the first answered probe closes
    it, and every watch ends as scripted."""
    env = {
        **OUTAGE,
        "TASKWARDEN_CIRCUIT__FAILURES": "6",
        "TASKWARDEN_CIRCUIT__PROBE_INTERVAL": "0.5",
        "TASKWARDEN_CIRCUIT__RAMP": "1",
    }
    with running_warden(tmp_path, server, **env) as warden:
        tasks = start(warden, server, 6)
        fault = server.inject(kind="status", status=503, platform="geobox", count=None)

        def circuit_probes() -> int:
            circuit = warden.store.circuits(["geobox"])["geobox"]
            return circuit.probes if circuit.is_open else -1

        # past the first probes, the checks sent before the circuit opened have all landed
        wait_for(lambda: circuit_probes() >= 2, timeout=60)
        probes, requests, errors = (
            circuit_probes(),
            geobox_requests(server),
            errors_of(warden, tasks),
        )
        wait_for(lambda: circuit_probes() >= probes + 6, timeout=60)
        probes_after, requests_after = circuit_probes(), geobox_requests(server)
        # one request per probe (a probe taken as the snapshot was read may be in flight)
        assert requests_after - requests <= probes_after - probes + 1
        assert requests_after - requests >= probes_after - probes - 1
        assert errors_of(warden, tasks) == errors  # held: no watch's count burned
        assert all(n < OLD_ATTEMPTS for n in errors)
        assert warden.store.failing_counts(["geobox"])["geobox"] >= 1

        server.faults.remove(fault)
        wait_for(lambda: not warden.store.circuits(["geobox"])["geobox"].is_open, timeout=30)
        end_as_scripted(warden, tasks)
        circuit = warden.store.circuits(["geobox"])["geobox"]
        assert (circuit.opened, circuit.failures) == (1, 0)
        assert warden.store.metric_cells().get("circuit_opened|geobox") == "1"
