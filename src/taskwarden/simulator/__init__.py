"""Local HTTP simulators of the remote platforms, for tests, the demo and the benchmarks.

Each platform speaks its real paths, JSON, status words, auth and error bodies, plays scripted
task lifecycles, and misbehaves on demand (:mod:`~taskwarden.simulator.faults`). Start one with
:class:`SimulatorServer` (background thread, for tests) or :func:`serve` (foreground, for the
CLI); drive it from Python or through its control API under ``/_control/``.
"""

from taskwarden.simulator.app import Simulation, create_app
from taskwarden.simulator.clock import SimClock
from taskwarden.simulator.faults import Fault, FaultBook, Stats
from taskwarden.simulator.geobox import GeoboxSimulator, GeoboxTask, GeoboxTaskSpec
from taskwarden.simulator.script import (
    Script,
    ScriptedTask,
    iter_output,
    output_bytes,
    output_sha256,
)
from taskwarden.simulator.server import SimulatorServer, serve

__all__ = [
    "Fault",
    "FaultBook",
    "GeoboxSimulator",
    "GeoboxTask",
    "GeoboxTaskSpec",
    "Script",
    "ScriptedTask",
    "SimClock",
    "Simulation",
    "SimulatorServer",
    "Stats",
    "create_app",
    "iter_output",
    "output_bytes",
    "output_sha256",
    "serve",
]
