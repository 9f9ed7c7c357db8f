"""Registering and reading watches: ``track``, ``ls``, ``show``, ``wait``. They read the store
directly, so they work with no API running (the embedded Redis included); every one that
reads takes ``--json``.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import click

from taskwarden import keys, service
from taskwarden.cli import bulk, common
from taskwarden.cli.common import ExitCode
from taskwarden.errors import InvalidRegistration
from taskwarden.lifecycle import State
from taskwarden.models import Watch
from taskwarden.store import SORTS, BadQuery, Store, StoreError


@click.command()
@click.argument("provider", required=False)
@click.argument("remote_id", required=False)
@click.option(
    "--from-file",
    "from_file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="Register every task in FILE (JSON lines, or CSV with a header such as "
    "provider,remote_id,labels; - for stdin). The other options apply to each one that does "
    "not say otherwise.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto",
    show_default=True, help="Of --from-file: auto reads JSON lines when the file starts with {.",
)  # fmt: skip
@click.option("--label", "labels", multiple=True, help="k=v, repeatable.")
@click.option("--param", "params", multiple=True, help="k=v provider option, repeatable.")
@click.option("--timeout", type=float, default=None, help="Seconds until the watch gives up.")
@click.option(
    "--archive",
    "archive_mode",
    type=click.Choice(["success", "final", "none"]),
    default=None,
    help="What to archive: outputs of a success (the default), also what a failed, cancelled or "
    "timed-out task left behind (final), or nothing (none).",
)
@click.option("--no-archive", is_flag=True, help="Do not archive anything (--archive none).")
@click.option("--abort-on-timeout", is_flag=True, help="Abort the remote task at the timeout.")
@click.option("--webhook", default=None, help="URL called with the watch on its final state.")
@click.option(
    "--retention",
    type=float,
    default=None,
    help="Seconds the watch is kept once final (default: TASKWARDEN_RETENTION__*).",
)
@click.option("--json", "as_json", is_flag=True)
def track(
    provider: str | None,
    remote_id: str | None,
    from_file: IO[str] | None,
    fmt: str,
    labels: tuple[str, ...],
    params: tuple[str, ...],
    timeout: float | None,
    archive_mode: str | None,
    no_archive: bool,
    abort_on_timeout: bool,
    webhook: str | None,
    retention: float | None,
    as_json: bool,
) -> None:
    """Watch a remote task (idempotent: the same task is one watch), or every task of a file
    (--from-file: a summary, then each refusal by line; --json: every line's result; exit
    status 2 when any was refused)."""
    if no_archive and archive_mode not in (None, "none"):
        raise click.UsageError(f"--no-archive contradicts --archive {archive_mode}")
    if from_file is not None:
        if provider is not None:
            raise click.UsageError("give PROVIDER REMOTE_ID or --from-file, not both")
        defaults: dict[str, Any] = {}
        if labels:
            defaults["labels"] = common.parse_pairs(labels, "--label")
        if params:
            defaults["params"] = common.parse_pairs(params, "--param")
        if timeout is not None:
            defaults["timeout"] = timeout
        if no_archive or archive_mode is not None:
            defaults["archive"] = False if no_archive or archive_mode == "none" else archive_mode
        if abort_on_timeout:
            defaults["abort_on_timeout"] = True
        if webhook is not None:
            defaults["webhook"] = webhook
        track_file(from_file, fmt, defaults, as_json)
        return
    if provider is None or remote_id is None:
        raise click.UsageError("give PROVIDER and REMOTE_ID, or --from-file FILE")
    settings = common.settings()
    mode = "none" if no_archive else archive_mode or "success"
    data = {
        "provider": provider,
        "remote_id": remote_id,
        "labels": common.parse_pairs(labels, "--label"),
        "params": common.parse_pairs(params, "--param"),
        "timeout": timeout,
        "archive": False if mode == "none" else mode,
        "abort_on_timeout": abort_on_timeout,
    }
    if webhook is not None:
        data["webhook"] = webhook
    if retention is not None:
        data["retention"] = retention
    try:
        service.parse(data)  # refuse bad input before starting an embedded Redis
    except InvalidRegistration as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.INVALID)
    with common.open_store(settings) as store:
        try:
            watch, created = service.register(store, settings, data, source="cli")
        except InvalidRegistration as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(ExitCode.INVALID)
        idle = not watch.state.final and not _polled(store)
    if as_json:
        click.echo(json.dumps({"watch_id": watch.id, "created": created}))
    else:
        click.echo(f"{watch.id} {'registered' if created else 'already watched'} ({watch.state})")
    if idle:
        click.echo(
            f"warning: no worker heartbeat is live on {keys.QUEUE_POLL!r}: nothing checks this "
            "watch until a warden runs (`taskwarden run`)",
            err=True,
        )


def _polled(store: Store) -> bool:
    """Whether a live worker consumes the poll queue (one too old to say counts)."""
    return any(q is None or keys.QUEUE_POLL in q for q in store.worker_queues().values())


def track_file(stream: IO[str], fmt: str, defaults: dict[str, Any], as_json: bool) -> None:
    """Register every task ``stream`` holds (see :mod:`taskwarden.cli.bulk`), a chunk a round
    trip, and say what became of each."""
    settings = common.settings()
    results: list[dict[str, Any]] = []
    with common.open_store(settings) as store:
        for chunk in bulk.chunks(bulk.read(stream, fmt)):
            items = [bulk.with_defaults(item, defaults) for _, item in chunk]
            outcomes = service.register_many(store, settings, items, source="cli")
            results += [{"line": line, **outcome.to_dict()}
                        for (line, _), outcome in zip(chunk, outcomes, strict=True)]  # fmt: skip
    counts = {status: sum(1 for r in results if r["status"] == status)
              for status in ("created", "exists", "refused")}  # fmt: skip
    if as_json:
        click.echo(json.dumps({**counts, "results": results}))
    else:
        click.echo(
            f"{counts['created']} registered, {counts['exists']} already watched, "
            f"{counts['refused']} refused"
        )
        for result in results:
            if result["status"] == "refused":
                click.echo(f"line {result['line']}: {result['error']}", err=True)
    if counts["refused"]:
        sys.exit(ExitCode.INVALID)


@click.command(name="ls")
@common.filter_options
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
    settings = common.settings()
    watches: list[Watch] = []
    with common.open_store(settings) as store:
        while len(watches) < limit:
            try:
                page, cursor = store.list_watches(
                    state=state,
                    provider=provider,
                    labels=common.parse_pairs(labels, "--label") or None,
                    q=search,
                    created_after=created_after,
                    created_before=created_before,
                    updated_after=updated_after,
                    updated_before=updated_before,
                    sort=sort,
                    limit=min(common.PAGE, limit - len(watches)),
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
            w.id, w.provider, w.remote_id, w.name or "-", _state(w), common.bar(w.progress),
            w.raw_status or "-", common.when(w.updated_at),
        )  # fmt: skip
    common.print_table(table)


FAILING = "\N{WARNING SIGN}"  # marks a watch in ``ls`` whose checks are failing


def _failing(watch: Watch) -> bool:
    """Whether the checks (or archive runs) of a live watch are failing now."""
    return not watch.state.final and (watch.errors > 0 or watch.failing_since is not None)


def _state(watch: Watch) -> str:
    return f"{watch.state} {FAILING}" if _failing(watch) else str(watch.state)


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """Show one watch (by id or provider:remote_id) with its history and outputs."""
    settings = common.settings()
    with common.open_store(settings) as store:
        watch = common.find(store, ref)
        history = store.history(watch.id)
    data: dict[str, Any] = {**watch.to_dict(), "history": history}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("id", "provider", "remote_id", "name", "state", "raw_status", "last_error"):
        click.echo(f"{key:<12} {data[key] if data[key] is not None else '-'}")
    if watch.last_error_kind:
        click.echo(f"{'error kind':<12} {watch.last_error_kind}")
    if watch.state is State.ARCHIVING and watch.outcome is not None:
        click.echo(f"{'lands on':<12} {watch.outcome} (once archived)")
    click.echo(f"{'progress':<12} {common.bar(watch.progress)}")
    click.echo(f"{'created':<12} {common.when(watch.created_at)}")
    click.echo(f"{'updated':<12} {common.when(watch.updated_at)}")
    click.echo(f"{'finished':<12} {common.when(watch.finished_at)}")
    click.echo(f"{'deadline':<12} {common.when(watch.deadline)}")
    click.echo(f"{'archive':<12} {watch.archive or 'none'}")
    click.echo(f"{'polls':<12} {watch.polls}")
    if _failing(watch):
        counted = f"{watch.errors} failed checks in a row" if watch.errors else "checks failing"
        since = common.when(watch.failing_since)
        click.echo(f"{'failing':<12} {counted}, since {since} (last error above)")
    remote = (watch.remote_created_at, watch.remote_started_at, watch.remote_ended_at)
    words = ("created", "started", "ended")
    times = [(word, at) for word, at in zip(words, remote, strict=True) if at]
    if times:  # the platform's own times of the task, those it gives
        click.echo(f"{'platform':<12} " + ", ".join(f"{w} {common.when(at)}" for w, at in times))
    if watch.details:
        click.echo(f"{'details':<12} {json.dumps(watch.details, sort_keys=True)}")
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
            f"  {common.when(entry['at'])}  {entry.get('from') or '-'} -> {entry['to']}{raw}{note}"
        )


@click.command()
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
    Redis that stops answering (until --timeout, if given)."""
    from taskwarden.client import WaitTimeout, follow

    settings = common.settings()
    with common.open_store(settings) as store:
        wid = common.find(store, ref).id

        def fetch() -> dict[str, Any]:
            watch = store.get(wid)
            if watch is None:
                click.echo(f"error: watch {wid} disappeared", err=True)
                sys.exit(ExitCode.NOT_FOUND)
            return watch.to_dict()

        try:
            final = follow(
                fetch, timeout, not no_progress, interval,
                transient=lambda exc: isinstance(exc, StoreError),  # a restart, a failover
                grace=None,  # a Redis restart or failover is waited out, however long
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


COMMANDS = [track, list_watches, show, wait]
