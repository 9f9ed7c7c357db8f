"""Run the simulator as a real HTTP server: in a background thread for tests, or in the
foreground for ``taskwarden simulate``.

    with SimulatorServer() as sim:
        task = sim.geobox.add_task(running_seconds=2, file_size=10_000_000)
        ...  # point a client at sim.geobox_url
        assert sim.stats.count(route="tasks/{uuid}/status/", task=task.uuid) == 0
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from taskwarden.simulator.app import Simulation, create_app
from taskwarden.simulator.clock import SimClock
from taskwarden.simulator.descarteslabs import DescartesLabsSimulator
from taskwarden.simulator.earthone import EarthOneSimulator
from taskwarden.simulator.faults import Fault, FaultBook, Stats
from taskwarden.simulator.generic import GenericSimulator
from taskwarden.simulator.geobox import GeoboxSimulator
from taskwarden.simulator.isahit import IsahitSimulator
from taskwarden.simulator.up42 import Up42Simulator

DEFAULT_PORT = 8765


def _config(app: Any, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # 20,000 lines per benchmark run help nobody
        lifespan="off",
        ws="none",
        backlog=4096,  # benchmarks open hundreds of connections at once
        timeout_keep_alive=30,
    )


def _server(config: uvicorn.Config, simulation: Simulation) -> uvicorn.Server:
    server = uvicorn.Server(config)
    connections = server.server_state.connections
    simulation.stats.connection_probe = lambda: len(connections)
    return server


class SimulatorServer:
    """The simulator on ``host`` (loopback) in a daemon thread, with its state in reach.

    ``port=0`` takes a free port. ``url`` is the server root; ``geobox_url`` is the Geobox API
    base (``…/geobox/v1/``, what ``GeoboxSettings.base_url`` wants). ``simulation`` gives the
    platforms, faults, counters and clock directly, as do the shortcuts below.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        simulation: Simulation | None = None,
        log_level: str = "warning",
    ) -> None:
        self.simulation = simulation or Simulation()
        self.host = host
        self._requested_port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def geobox_url(self) -> str:
        return f"{self.url}{self.simulation.geobox.prefix}/"

    @property
    def geobox(self) -> GeoboxSimulator:
        return self.simulation.geobox

    @property
    def descarteslabs(self) -> DescartesLabsSimulator:
        """Descartes Labs; ``descarteslabs.env(url)`` gives the settings that point at it."""
        return self.simulation.descarteslabs

    @property
    def earthone(self) -> EarthOneSimulator:
        """EarthOne; ``earthone.env(url)`` gives the settings that point at it, ``sdk_env(url)``
        the SDK's."""
        return self.simulation.earthone

    @property
    def generic_url(self) -> str:
        """The generic platform's root (``…/generic/``), for ``http`` profile URLs."""
        return f"{self.url}{self.simulation.generic.prefix}/"

    @property
    def generic(self) -> GenericSimulator:
        return self.simulation.generic

    @property
    def isahit_url(self) -> str:
        """The isahit lab API base (``…/isahit/``): ``IsahitSettings.base_url``, the SDK's
        ``endpoint``."""
        return f"{self.url}{self.simulation.isahit.prefix}/"

    @property
    def isahit(self) -> IsahitSimulator:
        return self.simulation.isahit

    @property
    def up42_url(self) -> str:
        """The UP42 API base (``…/up42``, no trailing slash): ``Up42Settings.base_url``."""
        return f"{self.url}{self.simulation.up42.prefix}"

    @property
    def up42(self) -> Up42Simulator:
        return self.simulation.up42

    @property
    def faults(self) -> FaultBook:
        return self.simulation.faults

    @property
    def stats(self) -> Stats:
        return self.simulation.stats

    @property
    def clock(self) -> SimClock:
        return self.simulation.clock

    def inject(self, fault: Fault | None = None, **fields: Any) -> int:
        """Arm a fault (a :class:`Fault`, or its fields); returns its id."""
        return self.faults.add(fault if fault is not None else Fault(**fields))

    def reset(self, *, stats: bool = True, faults: bool = True, tasks: bool = True) -> None:
        self.simulation.reset(stats=stats, faults=faults, tasks=tasks)

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        """Bind, start serving in a background thread, and return once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = _config(create_app(self.simulation), self.host, self.port, self._log_level)
        server = _server(config, self.simulation)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="taskwarden-simulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end (open connections are closed)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    simulation: Simulation | None = None,
    log_level: str = "info",
) -> None:
    """Serve a simulation (a fresh one by default) in the foreground until interrupted.

    For ``taskwarden simulate``: uvicorn announces the address; Geobox is at ``/geobox/v1/``,
    the controls at ``/_control/``.
    """
    sim = simulation or Simulation()
    _server(_config(create_app(sim), host, port, log_level), sim).run()
