"""The ``taskwarden`` command: run the service, register and inspect watches, play with the
simulator, and run the demo."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, NoReturn

import click

from taskwarden import keys, logs, registration, webhooks
from taskwarden.config import Settings, load_settings
from taskwarden.errors import ConfigError, InvalidRegistration
from taskwarden.models import Watch
from taskwarden.providers import names as provider_names
from taskwarden.redis_server import check_redis, ensure_redis
from taskwarden.store import Store


class ExitCode(IntEnum):
    """Every exit status of the ``taskwarden`` command (the README's table lists them)."""

    OK = 0  # done; for `wait`: the watch succeeded
    UNEXPECTED = 1  # an unexpected error (a traceback or a message says what)
    INVALID = 2  # invalid input: bad options, a refused registration, a watch not retryable
    NOT_FOUND = 3  # no such watch
    WAIT_TIMEOUT = 4  # `wait --timeout` passed before the watch ended
    FAILED = 10  # the watch ended failed (the platform says the task failed)
    CANCELLED = 11
    TIMED_OUT = 12  # the watch's own timeout passed
    ERROR = 13  # the warden could not monitor the task

    @classmethod
    def for_state(cls, state: str) -> ExitCode:
        """The status `taskwarden wait` exits with for a watch that ended in ``state``."""
        return _FINAL_EXIT[state]


_FINAL_EXIT = {
    "succeeded": ExitCode.OK,
    "failed": ExitCode.FAILED,
    "cancelled": ExitCode.CANCELLED,
    "timed_out": ExitCode.TIMED_OUT,
    "error": ExitCode.ERROR,
}


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure(settings)
    return settings


@contextmanager
def _redis(settings: Settings, *, checked: bool = False) -> Iterator[str]:
    """The Redis URL to use; an embedded server started here is stopped on the way out.

    ``checked``: run the start-up checks of the long-running commands (:func:`_start_checks`).
    """
    try:
        url, server = ensure_redis(settings.redis_url, settings.data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if checked:
            _start_checks(settings, url)
        yield url
    finally:
        if server is not None:
            server.stop()


def _start_checks(settings: Settings, url: str) -> None:
    """Refuse a Redis whose settings would lose watches and a global webhook URL no watch could
    use; then bring what an older taskwarden stored up to this version's layout."""
    try:
        for warning in check_redis(url):
            logs.get("taskwarden.cli").warning("redis.unsafe", warning=warning)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    hook = settings.webhooks.url
    if hook is not None and (why := webhooks.refusal(settings, hook)) is not None:
        raise click.ClickException(f"TASKWARDEN_WEBHOOKS__URL: {why}")
    _upgrade(url)


def _upgrade(url: str) -> None:
    """Bring what an older taskwarden stored up to this version's layout (once; then one GET)."""
    store = Store.from_url(url)
    try:
        done = store.backfill_indexes()
    finally:
        store.redis.close()
    if done.ran:
        logs.get("taskwarden.cli").info(
            "store.backfilled", watches=done.watches, index_entries_added=done.added
        )


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    with _redis(settings) as url:
        store = Store.from_url(url, history_limit=settings.history_limit)
        try:
            yield store
        finally:
            store.redis.close()


@click.group()
@click.version_option(package_name="taskwarden")
def main() -> None:
    """Watch long-running remote tasks until they finish, then archive their outputs."""


# running the service


@main.command()
@click.option("-Q", "--queues", default=",".join(keys.ALL_QUEUES), show_default=True)
@click.option("-c", "--concurrency", type=int, default=None, help="Processes (default: CPUs).")
@click.option("-n", "--hostname", default=None, help="Celery node name.")
def worker(queues: str, concurrency: int | None, hostname: str | None) -> None:
    """Start a worker (polls, archives and registrations; pick with --queues)."""
    from taskwarden import archive_store
    from taskwarden.tasks import create_app

    settings = _settings()
    archive_store.open_store(settings)  # refuse to start on a bad archive URL, before forking
    unknown = sorted(set(settings.rate_limits) - set(provider_names()))
    if unknown:
        raise click.ClickException(
            f"TASKWARDEN_RATE_LIMITS names unknown providers: {', '.join(unknown)}"
        )
    with _redis(settings, checked=True) as url:
        app = create_app(settings, url)
        argv = [
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


@main.command()
def beat() -> None:
    """Start the beat scheduler that fires a dispatch every TASKWARDEN_DISPATCH_INTERVAL."""
    from taskwarden.tasks import create_app

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _redis(settings, checked=True) as url:
        app = create_app(settings, url)
        app.start(["beat", "--loglevel", settings.log_level.upper()])


@main.command()
@click.option("-c", "--concurrency", type=int, default=None, help="Poll worker processes.")
@click.option("--no-api", is_flag=True, help="Do not serve the HTTP API.")
def run(concurrency: int | None, no_api: bool) -> None:
    """Start the beat scheduler, a poll worker, an archive worker and the HTTP API together."""
    from taskwarden import api_token
    from taskwarden.service import Service

    settings = _settings()
    if not no_api:
        api_token.load_or_create(settings)  # made once here, not raced by the children
    with _redis(settings, checked=True) as url:
        stop = {"now": False}

        def _stop(*_: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        env = {"TASKWARDEN_REDIS_URL": url}
        with Service(env, poll_concurrency=concurrency, api=not no_api) as service:
            click.echo(
                f"taskwarden running (redis at {url.split('@')[-1]}); Ctrl-C stops it", err=True
            )
            if not no_api:
                where = "TASKWARDEN_API__TOKEN" if settings.api.token else api_token.path(settings)
                click.echo(
                    f"HTTP API and dashboard at http://{settings.api.host}:{settings.api.port}/"
                    f" (token: {where})",
                    err=True,
                )
            while not stop["now"] and service.alive():
                time.sleep(0.2)


@main.command()
@click.option("--host", default=None, help="Default: TASKWARDEN_API__HOST (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: TASKWARDEN_API__PORT (8787).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API and the dashboard."""
    import uvicorn

    from taskwarden.api import create_app

    settings = _settings()
    with _redis(settings) as url:
        app = create_app(settings, url)
        uvicorn.run(
            app,
            host=host or settings.api.host,
            port=settings.api.port if port is None else port,
            log_config=None,  # logs go through taskwarden's own configuration
            access_log=False,
            timeout_graceful_shutdown=2,  # event streams never end on their own
        )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8700, show_default=True)
def simulate(host: str, port: int) -> None:
    """Serve the platform simulator (Geobox under /geobox/v1/, control API under /_control/)."""
    from taskwarden.simulator.server import serve

    serve(host, port)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def providers(as_json: bool) -> None:
    """List the installed providers and the settings each one reads."""
    from taskwarden.providers import installed

    settings = _settings()
    configured = settings.providers.model_dump(mode="json")
    rows: list[dict[str, Any]] = []
    for name, info in sorted(installed().items()):
        own = configured.get(name, {})
        shown = {key: ("***" if value and _secret(key) else value) for key, value in own.items()}
        rows.append({"name": name, "factory": info.target, "builtin": info.builtin,
                     "settings": shown})  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        kind = "built in" if row["builtin"] else "plugin"
        click.echo(f"{row['name']}  ({kind}: {row['factory']})")
        prefix = f"TASKWARDEN_PROVIDERS__{row['name'].upper()}__"
        for key, value in row["settings"].items():
            click.echo(f"  {prefix}{key.upper()} = {value if value is not None else '(unset)'}")


def _secret(key: str) -> bool:
    return any(word in key for word in ("token", "key", "secret", "password"))


@main.command()
@click.option("--data-dir", type=click.Path(), default=None, help="Where the demo keeps state.")
def demo(data_dir: str | None) -> None:
    """Run everything against the simulator and check every task ends as scripted."""
    from taskwarden.demo import run_demo

    sys.exit(run_demo(data_dir))


# registering and reading


def _parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        out[key] = value
    return out


@main.command()
@click.argument("provider")
@click.argument("remote_id")
@click.option("--label", "labels", multiple=True, help="k=v, repeatable.")
@click.option("--param", "params", multiple=True, help="k=v provider option, repeatable.")
@click.option("--timeout", type=float, default=None, help="Seconds until the watch gives up.")
@click.option("--no-archive", is_flag=True, help="Do not archive outputs.")
@click.option("--abort-on-timeout", is_flag=True, help="Abort the remote task at the timeout.")
@click.option("--webhook", default=None, help="URL called with the watch on its final state.")
@click.option("--json", "as_json", is_flag=True)
def track(
    provider: str,
    remote_id: str,
    labels: tuple[str, ...],
    params: tuple[str, ...],
    timeout: float | None,
    no_archive: bool,
    abort_on_timeout: bool,
    webhook: str | None,
    as_json: bool,
) -> None:
    """Watch a remote task (idempotent: the same task is one watch)."""
    settings = _settings()
    data = {
        "provider": provider,
        "remote_id": remote_id,
        "labels": _parse_pairs(labels, "--label"),
        "params": _parse_pairs(params, "--param"),
        "timeout": timeout,
        "archive": not no_archive,
        "abort_on_timeout": abort_on_timeout,
    }
    if webhook is not None:
        data["webhook"] = webhook
    try:
        registration.parse(data)  # refuse bad input before starting an embedded Redis
    except InvalidRegistration as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.INVALID)
    with _store(settings) as store:
        try:
            watch, created = registration.register(store, settings, data, source="cli")
        except InvalidRegistration as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(ExitCode.INVALID)
    if as_json:
        click.echo(json.dumps({"watch_id": watch.id, "created": created}))
    else:
        click.echo(f"{watch.id} {'registered' if created else 'already watched'} ({watch.state})")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _progress(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _find(store: Store, ref: str) -> Watch:
    """A watch by id or ``provider:remote_id``; exits with NOT_FOUND when there is none."""
    found = store.find(ref)
    if found is None:
        _not_found(ref)
    return found


def _not_found(ref: str) -> NoReturn:
    click.echo(f"error: no watch {ref!r}", err=True)
    sys.exit(ExitCode.NOT_FOUND)


@main.command()
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def deadletters(limit: int, as_json: bool) -> None:
    """List refused registrations, newest first, with the reason each was refused."""
    settings = _settings()
    with _store(settings) as store:
        entries = store.dead_letters(limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for entry in entries:
        click.echo(f"{_when(entry['at'])}  [{entry['source']}] {entry['reason']}")
        click.echo(f"    {entry['body'][:300]}")


@main.command()
@click.argument("ref")
@click.option("--abort", is_flag=True, help="Also abort the remote task on the platform.")
def cancel(ref: str, abort: bool) -> None:
    """Stop watching a task."""
    from taskwarden.tasks import create_app

    settings = _settings()
    with _redis(settings) as url:
        store = Store.from_url(url, history_limit=settings.history_limit)
        watch = _find(store, ref)
        changed = store.cancel(watch.id, time.time())
        if abort:
            create_app(settings, url).send_task(keys.TASK_ABORT, args=[watch.id])
        store.redis.close()
    if changed:
        asked = " (abort requested; `taskwarden show` tells whether the platform took it)"
        click.echo(f"{watch.id} cancelled" + (asked if abort else ""))
    else:
        click.echo(f"{watch.id} had already ended ({watch.state})")


# the commands that read and steer watches (ls, show, wait, retry, events, stats) live in their
# own module, which adds them to `main`
from taskwarden import cli_watches  # noqa: E402, F401
