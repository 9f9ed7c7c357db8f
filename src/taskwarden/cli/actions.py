"""Steering watches: ``cancel`` (with ``--abort``, the remote task too), ``retry`` and
``forget``; ``cancel`` and ``retry`` take one watch or the filters of ``ls``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from taskwarden import keys
from taskwarden.cli import common
from taskwarden.cli.common import ExitCode
from taskwarden.service import bulk
from taskwarden.store import BadQuery, NotRearmable, Store

SHOWN = 10  # ids a dry run prints


@click.command()
@click.argument("ref", required=False)
@click.option("--abort", is_flag=True, help="Also abort the remote task on the platform.")
@common.filter_options
@click.option("--dry-run", is_flag=True, help="Change nothing: print how many, and the first ids.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def cancel(ref: str | None, abort: bool, dry_run: bool, as_json: bool, **filters: Any) -> None:
    """Stop watching a task (REF), or every watch the filters match (the filters of `ls`).

    With --abort, the platform is asked to abort each task cancelled; a watch that had already
    ended is refused (exit 2) and nothing is sent for it."""
    from taskwarden.worker import create_app

    settings = common.settings()
    if ref is None:
        with common.redis_url(settings) as url:
            store = Store.from_url(url, **settings.store_options())
            producer = create_app(settings, url) if abort and not dry_run else None

            def send_abort(wid: str) -> None:
                assert producer is not None
                producer.send_task(keys.TASK_ABORT, args=[wid])

            try:
                _bulk(store, "cancel", filters, dry_run, as_json, send_abort if producer else None)
            finally:
                store.close()
        return
    _refuse_filters_with_a_ref(filters, dry_run)
    with common.redis_url(settings) as url:
        store = Store.from_url(url, **settings.store_options())
        watch = common.find(store, ref)
        changed = store.cancel(watch.id, time.time())
        if abort and changed:
            create_app(settings, url).send_task(keys.TASK_ABORT, args=[watch.id])
        store.close()
    if changed:
        asked = " (abort requested; `taskwarden show` tells whether the platform took it)"
        click.echo(f"{watch.id} cancelled" + (asked if abort else ""))
    elif abort:
        click.echo(f"error: {watch.id} had already ended ({watch.state}); no abort sent", err=True)
        sys.exit(ExitCode.INVALID)
    else:
        click.echo(f"{watch.id} had already ended ({watch.state})")


@click.command()
@click.argument("ref", required=False)
@common.filter_options
@click.option("--dry-run", is_flag=True, help="Change nothing: print how many, and the first ids.")
@click.option("--json", "as_json", is_flag=True, help="Print the re-armed watch (or the tally).")
def retry(ref: str | None, dry_run: bool, as_json: bool, **filters: Any) -> None:
    """Re-arm a watch (REF) that ended in error or timed_out, or every such watch the filters
    match (the filters of `ls`): polled again from now, errors reset, a fresh deadline if it had
    a timeout."""
    settings = common.settings()
    if ref is None:
        with common.open_store(settings) as store:
            _bulk(store, "retry", filters, dry_run, as_json, None)
        return
    _refuse_filters_with_a_ref(filters, dry_run)
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


def _refuse_filters_with_a_ref(filters: dict[str, Any], dry_run: bool) -> None:
    given = [f"--{name.replace('_', '-')}" for name in common.FILTERS if filters[name]]
    if dry_run:
        given.append("--dry-run")
    if given:
        raise click.UsageError(f"give a watch or filters, not both ({', '.join(given)})")


def _bulk(
    store: Store,
    action: bulk.Action,
    filters: dict[str, Any],
    dry_run: bool,
    as_json: bool,
    on_cancelled: Callable[[str], None] | None,
) -> None:
    """Every watch the filters match, a batch at a time until none is left (a run cut short is
    taken up again by running it again: what was done is skipped)."""
    if not any(filters[name] for name in common.FILTERS):
        raise click.UsageError("give a watch, or at least one filter (--state, --label, ...)")
    selection = common.selection(filters)
    total = bulk.BulkResult(dry_run=dry_run)
    cursor: str | None = None
    while True:
        try:
            done = bulk.apply(
                store, action, selection, now=time.time(), limit=bulk.MAX_LIMIT, cursor=cursor,
                dry_run=dry_run, on_cancelled=on_cancelled, note="cancelled in bulk by the CLI",
            )  # fmt: skip
        except BadQuery as exc:
            raise click.BadParameter(str(exc)) from None
        total.matched += done.matched
        total.changed += done.changed
        total.ids += done.ids
        for state, n in done.skipped.items():
            total.skipped[state] = total.skipped.get(state, 0) + n
        cursor = done.next_cursor
        if cursor is None:
            break
    if as_json:
        click.echo(json.dumps(asdict(total), indent=2))
        return
    verb = {"cancel": "cancelled", "retry": "re-armed"}[action]
    left = ", ".join(f"{n} {state}" for state, n in sorted(total.skipped.items()))
    if dry_run:
        click.echo(f"would be {verb}: {total.changed} of {total.matched} matching")
        for wid in total.ids[:SHOWN]:
            click.echo(f"  {wid}")
        if total.changed > SHOWN:
            click.echo(f"  ... and {total.changed - SHOWN} more")
    else:
        click.echo(f"{verb}: {total.changed} of {total.matched} matching")
    if left:
        click.echo(f"left alone: {left}")


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
