"""The commands that read and steer watches: ``ls``, ``show``, ``wait``, ``retry``, ``events``,
``stats``. They read the store directly, so they work with no API running (the embedded Redis
included); every one that reads takes ``--json``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
import redis

from taskwarden import keys
from taskwarden.cli import (
    ExitCode,
    _find,
    _not_found,
    _parse_pairs,
    _progress,
    _settings,
    _store,
    _when,
    main,
)
from taskwarden.lifecycle import State
from taskwarden.models import Watch
from taskwarden.store import NotRearmable
from taskwarden.store_queries import SORTS, BadQuery

PAGE = 500  # watches read from the store at a time
OUTAGE_GRACE = 60.0  # seconds `wait` and `events --follow` ride out a Redis that stopped answering
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_moment(text: str, now: float) -> float:
    """A point in time as unix seconds, from unix seconds (``1700000000``), ISO-8601
    (``2026-01-31``, ``2026-01-31T12:00:00+01:00``; UTC when no offset is given), or a span
    before ``now`` (``90s``, ``15m``, ``1h``, ``2d``, ``1w``)."""
    text = text.strip()
    relative = RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * UNITS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give ISO-8601 (2026-01-31T12:00Z), unix seconds, "
            "or a span ago like 30m, 1h, 2d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A time option's value as unix seconds (see ``parse_moment``)."""
    if value is None:
        return None
    try:
        return parse_moment(value, time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _bar(progress: float | None, width: int = 10) -> str:
    if progress is None:
        return "-"
    filled = round(max(0.0, min(progress, 1.0)) * width)
    return "█" * filled + "░" * (width - filled) + f" {progress * 100:3.0f}%"


def _print_table(table: Any) -> None:
    from rich.console import Console

    # off a terminal rich would wrap ids to 80 columns; pipes and scripts want whole lines
    Console(width=None if sys.stdout.isatty() else 200).print(table)


# --- ls -------------------------------------------------------------------------------------


@main.command(name="ls")
@click.option("--state", type=click.Choice([str(s) for s in State]), default=None)
@click.option("--provider", default=None)
@click.option("--label", "labels", multiple=True, help="k=v, repeatable: every one must match.")
@click.option("-q", "--search", default=None, help="Text in the id, remote id or name.")
@click.option("--created-after", metavar="TIME", callback=_moment, help="ISO-8601, unix s, 1h...")
@click.option("--created-before", metavar="TIME", callback=_moment)
@click.option("--updated-after", metavar="TIME", callback=_moment)
@click.option("--updated-before", metavar="TIME", callback=_moment)
@click.option("--sort", type=click.Choice(SORTS), default="-created_at", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--cursor", default=None, help="Where a previous listing stopped.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of watches.")
def list_watches(
    state: str | None,
    provider: str | None,
    labels: tuple[str, ...],
    search: str | None,
    created_after: float | None,
    created_before: float | None,
    updated_after: float | None,
    updated_before: float | None,
    sort: str,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List watches (newest first unless --sort says otherwise), with the filters of the API.

    When more match than --limit, the cursor of the next page goes to stderr."""
    settings = _settings()
    watches: list[Watch] = []
    with _store(settings) as store:
        while len(watches) < limit:
            try:
                page, cursor = store.list_watches(
                    state=state,
                    provider=provider,
                    labels=_parse_pairs(labels, "--label") or None,
                    q=search,
                    created_after=created_after,
                    created_before=created_before,
                    updated_after=updated_after,
                    updated_before=updated_before,
                    sort=sort,
                    limit=min(PAGE, limit - len(watches)),
                    cursor=cursor,
                )
            except BadQuery as exc:
                raise click.BadParameter(str(exc)) from None
            watches += page
            if cursor is None:  # a short page with a cursor: a sparse filter, more to scan
                break
    if cursor is not None:
        click.echo(f"more: --cursor {cursor}", err=True)
    if as_json:
        click.echo(json.dumps([w.to_dict() for w in watches], indent=2))
        return
    from rich.table import Table

    table = Table("id", "provider", "remote id", "name", "state", "progress", "raw", "updated")
    for w in watches:
        table.add_row(
            w.id, w.provider, w.remote_id, w.name or "-", str(w.state), _bar(w.progress),
            w.raw_status or "-", _when(w.updated_at),
        )  # fmt: skip
    _print_table(table)


# --- show -----------------------------------------------------------------------------------


@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """Show one watch (by id or provider:remote_id) with its history and outputs."""
    settings = _settings()
    with _store(settings) as store:
        watch = _find(store, ref)
        history = store.history(watch.id)
    data: dict[str, Any] = {**watch.to_dict(), "history": history}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("id", "provider", "remote_id", "name", "state", "raw_status", "last_error"):
        click.echo(f"{key:<12} {data[key] if data[key] is not None else '-'}")
    click.echo(f"{'progress':<12} {_bar(watch.progress)}")
    click.echo(f"{'created':<12} {_when(watch.created_at)}")
    click.echo(f"{'updated':<12} {_when(watch.updated_at)}")
    click.echo(f"{'finished':<12} {_when(watch.finished_at)}")
    click.echo(f"{'deadline':<12} {_when(watch.deadline)}")
    click.echo(f"{'polls':<12} {watch.polls}")
    if watch.labels:
        click.echo(f"{'labels':<12} " + ", ".join(f"{k}={v}" for k, v in watch.labels.items()))
    if data.get("webhook") or data.get("webhook_status"):
        status = data.get("webhook_status") or "-"
        error = f", last error: {data['webhook_error']}" if data.get("webhook_error") else ""
        attempts = data.get("webhook_attempts")
        tries = f" after {attempts} attempts" if attempts else ""
        click.echo(f"{'webhook':<12} {data.get('webhook') or '(global)'}: {status}{tries}{error}")
    if watch.manifest:
        click.echo(f"{'manifest':<12} {watch.manifest}")
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


# --- wait -----------------------------------------------------------------------------------


@main.command()
@click.argument("ref")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Give up after (s).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the final watch as JSON.")
def wait(
    ref: str, timeout: float | None, interval: float, no_progress: bool, as_json: bool
) -> None:
    """Wait for a watch to end, with a progress bar of the remote progress on stderr.

    Exits 0 when it succeeded, 10 failed, 11 cancelled, 12 timed_out, 13 error, 4 when
    --timeout passed first. It reads the warden's state, never the platform, and rides out a
    Redis that stops answering for up to a minute."""
    from taskwarden.client import WaitTimeout, follow

    settings = _settings()
    with _store(settings) as store:
        wid = _find(store, ref).id

        def fetch() -> dict[str, Any]:
            watch = store.get(wid)
            if watch is None:
                click.echo(f"error: watch {wid} disappeared", err=True)
                sys.exit(ExitCode.NOT_FOUND)
            return watch.to_dict()

        try:
            final = follow(
                fetch, timeout, not no_progress, interval,
                transient=lambda exc: isinstance(exc, redis.RedisError),  # a restart, a failover
                grace=OUTAGE_GRACE,
            )  # fmt: skip
        except WaitTimeout as exc:
            if as_json:
                click.echo(json.dumps(exc.watch, indent=2))
            click.echo(f"error: {exc}", err=True)
            sys.exit(ExitCode.WAIT_TIMEOUT)
        final["history"] = store.history(wid)
    if as_json:
        click.echo(json.dumps(final, indent=2))
    else:
        raw = f" [{final['raw_status']}]" if final.get("raw_status") else ""
        error = f": {final['last_error']}" if final.get("last_error") else ""
        click.echo(f"{wid} {final['state']}{raw}{error}")
    sys.exit(ExitCode.for_state(final["state"]))


# --- retry ----------------------------------------------------------------------------------


@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the re-armed watch as JSON.")
def retry(ref: str, as_json: bool) -> None:
    """Re-arm a watch that ended in error or timed_out: polled again from now, errors reset,
    a fresh deadline if it had a timeout."""
    settings = _settings()
    with _store(settings) as store:
        watch = _find(store, ref)
        try:
            rearmed = store.rearm(watch.id, time.time())
        except NotRearmable as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(ExitCode.INVALID)
        if rearmed is None:  # gone since it was found
            _not_found(ref)
    if as_json:
        click.echo(json.dumps(rearmed.to_dict(), indent=2))
    else:
        click.echo(f"{rearmed.id} re-armed ({rearmed.state})")


# --- events ---------------------------------------------------------------------------------


def _event_line(fields: dict[str, str]) -> str:
    at = _when(float(fields["at"])) if fields.get("at") else "-"
    raw = f" [{fields['raw']}]" if fields.get("raw") else ""
    progress = f" {_progress(float(fields['progress']))}" if fields.get("progress") else ""
    note = f"  {fields['note']}" if fields.get("note") else ""
    return (
        f"{at}  {fields.get('watch_id', '-')}  {fields.get('provider')}:{fields.get('remote_id')}"
        f"  {fields.get('from') or '-'} -> {fields.get('to')}{raw}{progress}{note}"
    )


@main.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come.")
@click.option("--after", default=None, help="Start after this event id (0: from the start).")
@click.option(
    "--last", type=click.IntRange(min=0), default=20, show_default=True,
    help="Without --after: start with this many recent events.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line (with its id).")
def events(follow: bool, after: str | None, last: int, as_json: bool) -> None:
    """Print the transitions of every watch (the Redis events stream); --follow tails it."""
    settings = _settings()

    def emit(batch: list[tuple[str, dict[str, str]]]) -> None:
        for event_id, fields in batch:
            click.echo(json.dumps({"id": event_id, **fields}) if as_json else _event_line(fields))
        sys.stdout.flush()

    with _store(settings) as store:
        if after is None:
            newest: list[tuple[str, dict[str, str]]] = store.redis.xrevrange(  # type: ignore[assignment]
                keys.EVENTS, count=max(last, 1)
            )
            emit(newest[::-1] if last else [])
            after = newest[0][0] if newest else "0"
        failing_since: float | None = None
        try:
            while True:
                try:
                    batch = store.events(after, count=500, block_ms=5000 if follow else None)
                except redis.ResponseError as exc:
                    raise click.BadParameter(str(exc), param_hint="--after") from None
                except redis.ConnectionError:
                    # following rides out a Redis restart or failover, for a minute
                    failing_since = failing_since or time.monotonic()
                    if not follow or time.monotonic() - failing_since > OUTAGE_GRACE:
                        raise
                    time.sleep(1)
                    continue
                failing_since = None
                emit(batch)
                if batch:
                    after = batch[-1][0]
                if not follow and len(batch) < 500:
                    return
        except KeyboardInterrupt:
            return
        except BrokenPipeError:  # `taskwarden events -f | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return


# --- stats ----------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True)
def stats(as_json: bool) -> None:
    """Watches by state and by provider, and the dispatch lag."""
    settings = _settings()
    with _store(settings) as store:
        counts = store.counts()
        providers = store.counts_by_provider()
        lag = store.dispatch_lag(time.time())
    if as_json:
        data = {
            "counts": counts,
            "providers": {name: {"counts": c} for name, c in providers.items()},
            "dispatch_lag_seconds": lag,
        }
        click.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    states = [str(s) for s in State]
    table = Table("provider", *states)
    for name, by_state in sorted(providers.items()):
        table.add_row(name, *(str(by_state.get(s, 0)) for s in states))
    table.add_row("all", *(str(counts.get(s, 0)) for s in states), style="bold")
    _print_table(table)
    click.echo(f"dispatch lag: {lag:.1f}s")
