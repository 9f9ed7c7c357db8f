"""What an operator reads: ``events``, ``stats``, ``deadletters`` and ``providers``."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from taskwarden.cli import common
from taskwarden.lifecycle import State
from taskwarden.store import UNREACHABLE, StoreRefused


def _event_line(fields: dict[str, str]) -> str:
    at = common.when(float(fields["at"])) if fields.get("at") else "-"
    raw = f" [{fields['raw']}]" if fields.get("raw") else ""
    progress = f" {common.progress(float(fields['progress']))}" if fields.get("progress") else ""
    note = f"  {fields['note']}" if fields.get("note") else ""
    return (
        f"{at}  {fields.get('watch_id', '-')}  {fields.get('provider')}:{fields.get('remote_id')}"
        f"  {fields.get('from') or '-'} -> {fields.get('to')}{raw}{progress}{note}"
    )


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come.")
@click.option("--after", default=None, help="Start after this event id (0: from the start).")
@click.option(
    "--last", type=click.IntRange(min=0), default=20, show_default=True,
    help="Without --after: start with this many recent events.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line (with its id).")
def events(follow: bool, after: str | None, last: int, as_json: bool) -> None:
    """Print the transitions of every watch (the Redis events stream); --follow tails it."""
    settings = common.settings()

    def emit(batch: list[tuple[str, dict[str, str]]]) -> None:
        for event_id, fields in batch:
            click.echo(json.dumps({"id": event_id, **fields}) if as_json else _event_line(fields))
        sys.stdout.flush()

    with common.open_store(settings, timeout=common.FOLLOW_BLOCK + 10) as store:
        failures = 0
        try:
            while True:
                block_ms = int(common.FOLLOW_BLOCK * 1000) if follow else None
                recent = after is None
                try:
                    if after is None:  # first the most recent, then what comes after them
                        newest = store.latest_events(max(last, 1))
                        batch = newest[::-1] if last else []
                        after = newest[0][0] if newest else "0"
                    else:
                        batch = store.events(after, count=500, block_ms=block_ms)
                except StoreRefused as exc:
                    raise click.BadParameter(str(exc), param_hint="--after") from None
                except UNREACHABLE as exc:
                    if not follow:
                        raise
                    # following rides out a Redis restart, failover or stall, however long
                    failures += 1
                    if failures == 1:
                        click.echo(f"redis unavailable ({exc}); retrying", err=True)
                    time.sleep(common.outage_pause(failures))
                    continue
                if failures:
                    click.echo("redis is back; following", err=True)
                    failures = 0
                emit(batch)
                if batch and not recent:
                    after = batch[-1][0]
                if not follow and not recent and len(batch) < 500:
                    return
        except KeyboardInterrupt:
            return
        except BrokenPipeError:  # `taskwarden events -f | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return


@click.command()
@click.option("--json", "as_json", is_flag=True)
def stats(as_json: bool) -> None:
    """Watches by state and by provider (with those whose checks are failing, and each
    provider's circuit breaker), and the dispatch lag."""
    settings = common.settings()
    with common.open_store(settings) as store:
        counts = store.counts()
        providers = store.counts_by_provider()
        lag = store.dispatch_lag(time.time())
        failing = store.failing_counts(list(providers))
        circuits = store.circuits(list(providers))
    if as_json:
        data = {
            "counts": counts,
            "providers": {
                name: {"counts": c, "failing": failing[name], "circuit": circuits[name].state}
                for name, c in providers.items()
            },
            "dispatch_lag_seconds": lag,
        }
        click.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    states = [str(s) for s in State]
    table = Table("provider", *states, "failing", "circuit")
    for name, by_state in sorted(providers.items()):
        table.add_row(
            name, *(str(by_state.get(s, 0)) for s in states), str(failing[name]),
            circuits[name].state,
        )  # fmt: skip
    table.add_row(
        "all", *(str(counts.get(s, 0)) for s in states), str(sum(failing.values())), "",
        style="bold",
    )  # fmt: skip
    common.print_table(table)
    click.echo(f"dispatch lag: {lag:.1f}s")


@click.command()
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def deadletters(limit: int, as_json: bool) -> None:
    """List refused registrations, newest first, with the reason each was refused."""
    settings = common.settings()
    with common.open_store(settings) as store:
        entries = store.dead_letters(limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for entry in entries:
        click.echo(f"{common.when(entry['at'])}  [{entry['source']}] {entry['reason']}")
        click.echo(f"    {entry['body'][:300]}")


@click.command()
@click.option("--json", "as_json", is_flag=True)
def providers(as_json: bool) -> None:
    """List the installed providers and the settings each one reads."""
    from taskwarden.providers import installed

    settings = common.settings()
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


COMMANDS = [events, stats, deadletters, providers]
