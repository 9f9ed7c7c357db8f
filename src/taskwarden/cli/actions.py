"""Steering watches: ``cancel`` (with ``--abort``, the remote task too), ``retry`` and
``forget``."""

from __future__ import annotations

import json
import sys
import time

import click

from taskwarden import keys
from taskwarden.cli import common
from taskwarden.cli.common import ExitCode
from taskwarden.store import NotRearmable, Store


@click.command()
@click.argument("ref")
@click.option("--abort", is_flag=True, help="Also abort the remote task on the platform.")
def cancel(ref: str, abort: bool) -> None:
    """Stop watching a task."""
    from taskwarden.worker import create_app

    settings = common.settings()
    with common.redis_url(settings) as url:
        store = Store.from_url(url, **settings.store_options())
        watch = common.find(store, ref)
        changed = store.cancel(watch.id, time.time())
        if abort:
            create_app(settings, url).send_task(keys.TASK_ABORT, args=[watch.id])
        store.close()
    if changed:
        asked = " (abort requested; `taskwarden show` tells whether the platform took it)"
        click.echo(f"{watch.id} cancelled" + (asked if abort else ""))
    else:
        click.echo(f"{watch.id} had already ended ({watch.state})")


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the re-armed watch as JSON.")
def retry(ref: str, as_json: bool) -> None:
    """Re-arm a watch that ended in error or timed_out: polled again from now, errors reset,
    a fresh deadline if it had a timeout."""
    settings = common.settings()
    with common.open_store(settings) as store:
        watch = common.find(store, ref)
        try:
            rearmed = store.rearm(watch.id, time.time())
        except NotRearmable as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(ExitCode.INVALID)
        if rearmed is None:  # gone since it was found
            common.not_found(ref)
    if as_json:
        click.echo(json.dumps(rearmed.to_dict(), indent=2))
    else:
        click.echo(f"{rearmed.id} re-armed ({rearmed.state})")


@click.command()
@click.argument("ref")
@click.option("--force", is_flag=True, help="Also a watch that is not final (left as it is).")
def forget(ref: str, force: bool) -> None:
    """Remove a watch from Redis now, with its history and index entries, whatever its
    retention; its archive stays. A watch that is not final is refused unless --force (the
    remote task is left alone: `cancel --abort` it first to stop it)."""
    settings = common.settings()
    with common.open_store(settings) as store:
        watch = common.find(store, ref)
        done = store.forget(watch.id, force=force)
    if not done.found:  # gone since it was found
        common.not_found(ref)
    if not done.removed:
        click.echo(
            f"error: {watch.id} is {done.state}, not final; cancel it first or pass --force",
            err=True,
        )
        sys.exit(ExitCode.INVALID)
    click.echo(f"{watch.id} forgotten (was {watch.state})")


COMMANDS = [cancel, retry, forget]
