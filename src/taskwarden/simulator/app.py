"""The simulator's ASGI app: every platform under its own prefix, plus a control API.

    /geobox/v1/…             Geobox (see :mod:`taskwarden.simulator.geobox`)
    /generic/…               any platform, for the http provider (:mod:`~.simulator.generic`)
    /earthone/…              EarthDaily EarthOne (:mod:`~.simulator.earthone`)
    /                        GET: the platforms served and their base paths (JSON)
    /_control/stats          GET: request counters (``?by_task=true`` adds per-task totals)
    /_control/reset          POST: forget counters, faults and tasks (``?only=stats|faults|tasks``)
    /_control/faults         GET: armed faults; POST: arm one or a list; DELETE: disarm all
    /_control/faults/{id}    DELETE: disarm one
    /_control/clock          GET; PUT {"speed": x, "advance": seconds}
    /_control/<platform>/tasks        POST: add scripted tasks (one JSON spec or a list);
                                      DELETE: forget them all
    /_control/<platform>/tasks/{id}   GET: a task's script, its current document, checksum
    /_control/<platform>/config       GET; PUT: the platform's settings (auth, tokens, keys)

A :class:`Simulation` holds the state every platform shares (the clock, the fault book, the
counters); tests reach it directly through :class:`~taskwarden.simulator.server.SimulatorServer`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from taskwarden.simulator.clock import SimClock
from taskwarden.simulator.descarteslabs import DescartesLabsSimulator
from taskwarden.simulator.earthone import EarthOneSimulator
from taskwarden.simulator.faults import Fault, FaultBook, Stats
from taskwarden.simulator.generic import GenericSimulator
from taskwarden.simulator.geobox import GeoboxSimulator
from taskwarden.simulator.isahit import IsahitSimulator
from taskwarden.simulator.up42 import Up42Simulator


class Platform(Protocol):
    """What a platform simulator gives the app: its API routes (served under ``prefix``) and
    the hooks of its control API (``/_control/<name>/…``)."""

    name: str
    prefix: str

    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]: ...

    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add scripted tasks from JSON; raise pydantic's ``ValidationError`` when malformed."""
        ...

    def describe(self, task_id: str) -> dict[str, Any] | None: ...

    def clear(self) -> None: ...

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]: ...

    def settings(self) -> dict[str, Any]: ...


class Simulation:
    """The whole simulated world: shared clock, faults, counters, and each platform's state."""

    def __init__(self, *, speed: float = 1.0) -> None:
        self.clock = SimClock(speed)
        self.faults = FaultBook()
        self.stats = Stats()
        self.geobox = GeoboxSimulator(self.clock)
        self.platforms: dict[str, Platform] = {self.geobox.name: self.geobox}
        self.descarteslabs = DescartesLabsSimulator(self.clock)
        self.platforms[self.descarteslabs.name] = self.descarteslabs
        self.earthone = EarthOneSimulator(self.clock)
        self.platforms[self.earthone.name] = self.earthone
        self.generic = GenericSimulator(self.clock)
        self.platforms[self.generic.name] = self.generic
        self.isahit = IsahitSimulator(self.clock)
        self.platforms[self.isahit.name] = self.isahit
        self.up42 = Up42Simulator(self.clock)
        self.platforms[self.up42.name] = self.up42

    def reset(self, *, stats: bool = True, faults: bool = True, tasks: bool = True) -> None:
        """Forget counters, armed faults and scripted tasks (each unless told not to)."""
        if stats:
            self.stats.reset()
        if faults:
            self.faults.clear()
        if tasks:
            for platform in self.platforms.values():
                platform.clear()

    def stats_snapshot(self, by_task: bool = False) -> dict[str, Any]:
        prefixes = {name: p.prefix + "/" for name, p in self.platforms.items()}
        return self.stats.snapshot(prefixes, by_task=by_task)


_FAULTS = TypeAdapter(list[Fault])


def create_app(simulation: Simulation | None = None) -> Starlette:
    """The ASGI app serving ``simulation`` (a fresh one when not given)."""
    sim = simulation or Simulation()
    routes: list[BaseRoute] = []
    for name, platform in sim.platforms.items():
        routes.append(Mount(platform.prefix, app=Router(platform.routes(sim.faults, sim.stats))))
        routes.append(Mount(f"/_control/{name}", routes=_platform_routes(platform)))
    routes.append(Mount("/_control", routes=_control_routes(sim)))
    routes.append(Route("/", _index(sim), methods=["GET"]))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.simulation = sim
    return app


def _index(sim: Simulation) -> Callable[[Request], Awaitable[Response]]:
    """``GET /``: what this simulator serves, for whoever opens its root."""

    async def index(request: Request) -> Response:
        root = str(request.base_url).rstrip("/")
        platforms = {
            name: {"base_path": f"{p.prefix}/", "url": f"{root}{p.prefix}/",
                   "control": f"/_control/{name}/"}
            for name, p in sim.platforms.items()
        }  # fmt: skip
        return JSONResponse({
            "service": "taskwarden simulator",
            "platforms": platforms,
            "control": "/_control/ (stats, reset, faults, clock; <platform>/tasks, config)",
            "warden_settings": "taskwarden simulate --print-env",
        })  # fmt: skip

    return index


def _control_routes(sim: Simulation) -> list[BaseRoute]:
    async def stats(request: Request) -> Response:
        by_task = request.query_params.get("by_task", "").lower() in ("1", "true")
        return JSONResponse(sim.stats_snapshot(by_task=by_task))

    async def reset(request: Request) -> Response:
        only = request.query_params.get("only")
        if only not in (None, "stats", "faults", "tasks"):
            return JSONResponse({"detail": "only must be stats, faults or tasks"}, 422)
        if only is None:
            sim.reset()
        else:
            sim.reset(stats=only == "stats", faults=only == "faults", tasks=only == "tasks")
        return JSONResponse({"reset": only or "all"})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(sim.faults.armed())
        if request.method == "DELETE":
            sim.faults.clear()
            return JSONResponse({"cleared": True})
        try:
            data = json.loads(await request.body())
            armed = _FAULTS.validate_python(data if isinstance(data, list) else [data])
        except ValidationError as exc:
            return JSONResponse({"detail": json.loads(exc.json(include_url=False))}, 422)
        except ValueError as exc:
            return JSONResponse({"detail": f"invalid JSON: {exc}"}, 422)
        unknown = {f.platform for f in armed if f.platform is not None} - set(sim.platforms)
        if unknown:
            return JSONResponse({"detail": f"unknown platform(s): {sorted(unknown)}"}, 422)
        return JSONResponse({"ids": [sim.faults.add(f) for f in armed]}, 201)

    async def fault(request: Request) -> Response:
        if sim.faults.remove(int(request.path_params["id"])):
            return JSONResponse({"removed": True})
        return JSONResponse({"detail": "no such fault"}, 404)

    async def clock(request: Request) -> Response:
        if request.method == "PUT":
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                return JSONResponse({"detail": "expected a JSON object"}, 422)
            try:
                if "speed" in body:
                    sim.clock.set_speed(float(body["speed"]))
                if "advance" in body:
                    sim.clock.advance(float(body["advance"]))
            except (TypeError, ValueError) as exc:
                return JSONResponse({"detail": str(exc)}, 422)
        return JSONResponse({"now": sim.clock.now(), "speed": sim.clock.speed})

    return [
        Route("/stats", stats, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/faults/{id:int}", fault, methods=["DELETE"]),
        Route("/clock", clock, methods=["GET", "PUT"]),
    ]


def _platform_routes(platform: Platform) -> list[BaseRoute]:
    async def add(request: Request) -> Response:
        try:
            data = json.loads(await request.body())
            created = platform.add_raw(data if isinstance(data, list) else [data])
        except ValidationError as exc:
            return JSONResponse({"detail": json.loads(exc.json(include_url=False))}, 422)
        except ValueError as exc:
            return JSONResponse({"detail": f"invalid JSON: {exc}"}, 422)
        return JSONResponse({"created": len(created), "tasks": created}, 201)

    async def clear(request: Request) -> Response:
        platform.clear()
        return JSONResponse({"cleared": True})

    async def show(request: Request) -> Response:
        found = platform.describe(request.path_params["task_id"])
        if found is None:
            return JSONResponse({"detail": "no such task"}, 404)
        return JSONResponse(found)

    async def config(request: Request) -> Response:
        if request.method == "PUT":
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                return JSONResponse({"detail": "expected a JSON object"}, 422)
            return JSONResponse(platform.configure(body))
        return JSONResponse(platform.settings())

    return [
        Route("/tasks", add, methods=["POST"]),
        Route("/tasks", clear, methods=["DELETE"]),
        Route("/tasks/{task_id}", show, methods=["GET"]),
        Route("/config", config, methods=["GET", "PUT"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI's shape, which the platforms' clients expect even for a 404 on an unknown path
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
