"""Running the warden: ``worker``, ``beat``, ``run`` (all of them), ``api``, and the tools
around it, ``simulate`` and ``demo``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click

from taskwarden import keys, logs
from taskwarden.cli import common

SIMULATOR_PORT = 8700  # `simulate` and `run --simulator`


@click.command()
@click.option("-Q", "--queues", default=",".join(keys.ALL_QUEUES), show_default=True)
@click.option("-c", "--concurrency", type=int, default=None, help="Processes (default: CPUs).")
@click.option("-n", "--hostname", default=None, help="Celery node name.")
def worker(queues: str, concurrency: int | None, hostname: str | None) -> None:
    """Start a worker (polls, archives and registrations; pick with --queues).

    Exits with Celery's status: non-zero after an "Unrecoverable error", so that a restart policy
    (``restart: on-failure``, systemd's ``Restart=on-failure``) brings it back."""
    from celery import signals

    from taskwarden import archive
    from taskwarden.worker import create_app

    status: dict[str, int] = {}

    def _exit_status(sender: Any, **_: Any) -> None:
        status["code"] = int(sender.exitcode or 0)  # the WorkController: set before this signal

    # Celery's app.worker_main drops the exit status the worker sets when it stops on an error
    signals.worker_shutdown.connect(_exit_status, weak=False)

    settings = common.settings()
    archive.open_store(settings)  # refuse to start on a bad archive URL, before forking
    with common.redis_url(settings, checked=True) as url:
        app = create_app(settings, url)
        argv = [
            *_quiet(),
            "worker",
            "-Q",
            queues,
            "--loglevel",
            settings.log_level.upper(),
            "--without-gossip",
            "--without-mingle",
        ]
        if concurrency:
            argv += ["--concurrency", str(concurrency)]
        if hostname:
            argv += ["--hostname", hostname]
        app.worker_main(argv)
    if status.get("code"):
        sys.exit(status["code"])


@click.command()
def beat() -> None:
    """Start the beat scheduler that fires a dispatch every TASKWARDEN_DISPATCH_INTERVAL."""
    from taskwarden.worker import create_app

    settings = common.settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with common.redis_url(settings, checked=True) as url:
        app = create_app(settings, url)
        app.start([*_quiet(), "beat", "--loglevel", settings.log_level.upper()])


def _quiet() -> list[str]:
    """Celery's ``--quiet`` when logs are JSON lines: its banners are text, printed as such."""
    return ["--quiet"] if logs.as_json() else []


@click.command()
@click.option("-c", "--concurrency", type=int, default=None, help="Poll worker processes.")
@click.option("--no-api", is_flag=True, help="Do not serve the HTTP API.")
@click.option(
    "--simulator", is_flag=True,
    help="Also serve the platform simulator (in this process) and point every provider at it.",
)  # fmt: skip
@click.option("--simulator-port", type=int, default=SIMULATOR_PORT, show_default=True)
def run(concurrency: int | None, no_api: bool, simulator: bool, simulator_port: int) -> None:
    """Start the beat scheduler, the control, poll and archive workers and the HTTP API."""
    with ExitStack() as stack:
        if simulator:
            stack.enter_context(_simulator(simulator_port))
        _run(concurrency, no_api)


@contextmanager
def _simulator(port: int) -> Iterator[None]:
    """Serve the simulator on loopback in a thread, and put the settings that point at it
    into this process's environment, which ``run``'s settings and children read."""
    from taskwarden.simulator.env import warden_env
    from taskwarden.simulator.server import SimulatorServer

    try:
        sim = SimulatorServer(port=port).start()
    except OSError as exc:
        raise click.ClickException(f"the simulator cannot listen on port {port}: {exc}") from None
    try:
        os.environ.update(warden_env(sim.simulation, sim.url))
        click.echo(
            f"simulator at {sim.url}/ (script a task: curl -X POST"
            f" {sim.url}/_control/geobox/tasks -d '{{\"running_seconds\": 30}}')",
            err=True,
        )
        yield
    finally:
        sim.stop()


def _run(concurrency: int | None, no_api: bool) -> None:
    from taskwarden import api_token
    from taskwarden.processes import Service

    settings = common.settings()
    if not no_api:
        common.refuse_open_reads(settings, settings.api.host)
        api_token.load_or_create(settings)  # made once here, not raced by the children
    with common.redis_url(settings, checked=True) as url:
        stop = {"now": False}

        def _stop(*_: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        env = {"TASKWARDEN_REDIS_URL": url}
        with Service(env, poll_concurrency=concurrency, api=not no_api) as service:
            # a log line, not text: the children's JSON lines share this stream
            said: dict[str, str] = {"redis": url.split("@")[-1], "stop": "Ctrl-C or SIGTERM"}
            if not no_api:
                where = "TASKWARDEN_API__TOKEN" if settings.api.token else api_token.path(settings)
                said["dashboard"] = f"http://{settings.api.host}:{settings.api.port}/"
                said["token_from"] = str(where)
            logs.get("taskwarden.cli").info("run.started", **said)
            while not stop["now"] and service.alive():
                time.sleep(0.2)


@click.command()
@click.option("--host", default=None, help="Default: TASKWARDEN_API__HOST (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: TASKWARDEN_API__PORT (8787).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API and the dashboard."""
    import uvicorn

    from taskwarden.api import create_app

    settings = common.settings()
    host = host or settings.api.host
    common.refuse_open_reads(settings, host)
    with common.redis_url(settings) as url:
        app = create_app(settings, url)
        uvicorn.run(
            app,
            host=host,
            port=settings.api.port if port is None else port,
            log_config=None,  # logs go through taskwarden's own configuration
            access_log=False,  # taskwarden.api.access writes one line per request instead
            timeout_graceful_shutdown=2,  # event streams never end on their own
        )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=SIMULATOR_PORT, show_default=True)
@click.option(
    "--print-env", is_flag=True,
    help="Print, as shell export lines, the TASKWARDEN_* settings that point a warden at the"
    " simulator served on --host and --port, and exit.",
)  # fmt: skip
def simulate(host: str, port: int, print_env: bool) -> None:
    """Serve the platform simulator (GET / lists its platforms; controls under /_control/)."""
    from taskwarden.simulator.app import Simulation
    from taskwarden.simulator.env import export_lines, warden_env
    from taskwarden.simulator.server import serve

    simulation = Simulation()  # its credentials are fixed: the same in every process
    if print_env:
        url = f"http://{_url_host(host)}:{port}"
        click.echo(export_lines(warden_env(simulation, url)), nl=False)
        return
    serve(host, port, simulation=simulation)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@click.command()
@click.option("--data-dir", type=click.Path(), default=None, help="Where the demo keeps state.")
def demo(data_dir: str | None) -> None:
    """Run everything against the simulator and check every task ends as scripted."""
    from taskwarden.demo import run_demo

    sys.exit(run_demo(data_dir))


COMMANDS = [worker, beat, run, api, simulate, demo]
