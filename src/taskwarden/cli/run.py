"""Running the warden: ``worker``, ``beat``, ``run`` (all of them), ``api``, and the tools
around it, ``simulate`` and ``demo``.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import click

from taskwarden import keys, logs
from taskwarden.cli import common


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
def run(concurrency: int | None, no_api: bool) -> None:
    """Start the beat scheduler, the control, poll and archive workers and the HTTP API."""
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
@click.option("--port", type=int, default=8700, show_default=True)
def simulate(host: str, port: int) -> None:
    """Serve the platform simulator (Geobox under /geobox/v1/, control API under /_control/)."""
    from taskwarden.simulator.server import serve

    serve(host, port)


@click.command()
@click.option("--data-dir", type=click.Path(), default=None, help="Where the demo keeps state.")
def demo(data_dir: str | None) -> None:
    """Run everything against the simulator and check every task ends as scripted."""
    from taskwarden.demo import run_demo

    sys.exit(run_demo(data_dir))


COMMANDS = [worker, beat, run, api, simulate, demo]
