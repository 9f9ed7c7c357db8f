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
from typing import Any

import click

from taskwarden import keys, logs
from taskwarden.config import Settings, load_settings
from taskwarden.errors import ConfigError, InvalidRegistration
from taskwarden.models import Registration, Watch, watch_id
from taskwarden.providers import names as provider_names
from taskwarden.redis_server import check_redis, ensure_redis
from taskwarden.store import Store

EXIT_INVALID = 2
EXIT_NOT_FOUND = 3


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

    ``checked``: refuse a Redis whose settings would lose watches (for the long-running commands).
    """
    try:
        url, server = ensure_redis(settings.redis_url, settings.data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if checked:
            try:
                for warning in check_redis(url):
                    logs.get("taskwarden.cli").warning("redis.unsafe", warning=warning)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        yield url
    finally:
        if server is not None:
            server.stop()


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
    from taskwarden import archive
    from taskwarden.tasks import create_app

    settings = _settings()
    archive.open_store(settings)  # refuse to start on a bad archive URL, before forking
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
def run(concurrency: int | None) -> None:
    """Start the beat scheduler, a poll worker and an archive worker together."""
    from taskwarden.service import Service

    settings = _settings()
    with _redis(settings, checked=True) as url:
        stop = {"now": False}

        def _stop(*_: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        with Service({"TASKWARDEN_REDIS_URL": url}, poll_concurrency=concurrency) as service:
            click.echo(
                f"taskwarden running (redis at {url.split('@')[-1]}); Ctrl-C stops it", err=True
            )
            while not stop["now"] and service.alive():
                time.sleep(0.2)


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
@click.option("--json", "as_json", is_flag=True)
def track(
    provider: str,
    remote_id: str,
    labels: tuple[str, ...],
    params: tuple[str, ...],
    timeout: float | None,
    no_archive: bool,
    abort_on_timeout: bool,
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
    try:
        reg = Registration.parse(data, provider_names())
    except InvalidRegistration as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    with _store(settings) as store:
        watch, created = store.register(reg, time.time(), settings.default_timeout)
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


@main.command(name="ls")
@click.option("--state", default=None)
@click.option("--provider", default=None)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_watches(state: str | None, provider: str | None, limit: int, as_json: bool) -> None:
    """List watches, newest first."""
    settings = _settings()
    with _store(settings) as store:
        watches = store.list_watches(state=state, provider=provider, limit=limit)
    if as_json:
        click.echo(json.dumps([w.to_dict() for w in watches], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "provider", "remote id", "state", "raw", "progress", "updated")
    for w in watches:
        table.add_row(
            w.id, w.provider, w.remote_id, str(w.state), w.raw_status or "-",
            _progress(w.progress), _when(w.updated_at),
        )  # fmt: skip
    # off a terminal rich would wrap ids to 80 columns; pipes and scripts want whole lines
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _find(store: Store, ref: str) -> Watch | None:
    """A watch by id, or by ``provider:remote_id``."""
    found = store.get(ref)
    if found is None and ":" in ref:
        provider, _, remote_id = ref.partition(":")
        found = store.get(watch_id(provider, remote_id))
    return found


@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """Show one watch (by id or provider:remote_id) with its history."""
    settings = _settings()
    with _store(settings) as store:
        watch = _find(store, ref)
        if watch is None:
            click.echo(f"error: no watch {ref!r}", err=True)
            sys.exit(EXIT_NOT_FOUND)
        history = store.history(watch.id)
    data: dict[str, Any] = {**watch.to_dict(), "history": history}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("id", "provider", "remote_id", "name", "state", "raw_status", "last_error"):
        click.echo(f"{key:<12} {data[key] if data[key] is not None else '-'}")
    click.echo(f"{'progress':<12} {_progress(watch.progress)}")
    click.echo(f"{'created':<12} {_when(watch.created_at)}")
    click.echo(f"{'updated':<12} {_when(watch.updated_at)}")
    click.echo(f"{'finished':<12} {_when(watch.finished_at)}")
    click.echo(f"{'deadline':<12} {_when(watch.deadline)}")
    click.echo(f"{'polls':<12} {watch.polls}")
    if watch.labels:
        click.echo(f"{'labels':<12} " + ", ".join(f"{k}={v}" for k, v in watch.labels.items()))
    if watch.outputs:
        click.echo("outputs:")
        for out in watch.outputs:
            click.echo(f"  {out['key']}  {out['size']} bytes  sha256 {out['sha256']}")
    click.echo("history:")
    for entry in history:
        note = f"  {entry['note']}" if entry.get("note") else ""
        raw = f" [{entry['raw']}]" if entry.get("raw") else ""
        click.echo(
            f"  {_when(entry['at'])}  {entry.get('from') or '-'} -> {entry['to']}{raw}{note}"
        )


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
        if watch is None:
            click.echo(f"error: no watch {ref!r}", err=True)
            sys.exit(EXIT_NOT_FOUND)
        changed = store.cancel(watch.id, time.time())
        if abort:
            create_app(settings, url).send_task(keys.TASK_ABORT, args=[watch.id])
        store.redis.close()
    if changed:
        asked = " (abort requested; `taskwarden show` tells whether the platform took it)"
        click.echo(f"{watch.id} cancelled" + (asked if abort else ""))
    else:
        click.echo(f"{watch.id} had already ended ({watch.state})")


if __name__ == "__main__":
    main()
