"""What the ``taskwarden`` commands share: settings, the Redis and store they use, exit codes,
and how they parse and print times, progress and tables."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, NoReturn, TypeVar

import click

from taskwarden import logs, webhooks
from taskwarden.config import Settings, load_settings, open_reads_refusal
from taskwarden.errors import ConfigError
from taskwarden.lifecycle import State
from taskwarden.models import Watch
from taskwarden.providers import check_settings
from taskwarden.redis_server import check_redis, ensure_redis, wait_reachable
from taskwarden.service.bulk import Selection
from taskwarden.store import Store, connection


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
        return FINAL_EXIT[state]


FINAL_EXIT = {
    "succeeded": ExitCode.OK,
    "failed": ExitCode.FAILED,
    "cancelled": ExitCode.CANCELLED,
    "timed_out": ExitCode.TIMED_OUT,
    "error": ExitCode.ERROR,
}


# `wait` and `events --follow` wait out a Redis that stopped answering (a restart, a failover, a
# full disk) for as long as it takes, retrying after 0.5 s, 1 s, 2 s, ... up to OUTAGE_BACKOFF_MAX
OUTAGE_BACKOFF_MAX = 10.0
FOLLOW_BLOCK = 5.0  # seconds one blocking read of `events --follow` waits for an event


PAGE = 500  # watches read from the store at a time


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def settings() -> Settings:
    try:
        settings = load_settings()
        check_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure(settings)
    return settings


def refuse_open_reads(settings: Settings, host: str) -> None:
    """Stop unless the API may listen on ``host``
    (:func:`~taskwarden.config.open_reads_refusal`)."""
    why = open_reads_refusal(settings.api, host)
    if why is not None:
        raise click.ClickException(why)


@contextmanager
def redis_url(settings: Settings, *, checked: bool = False) -> Iterator[str]:
    """The Redis URL to use; an embedded server started here is stopped on the way out.

    ``checked``: run the start-up checks of the long-running commands (:func:`start_checks`).
    """
    try:
        url, server = ensure_redis(settings.redis_url, settings.data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if checked:
            start_checks(settings, url)
        yield url
    finally:
        if server is not None:
            server.stop()


def start_checks(settings: Settings, url: str) -> None:
    """Refuse a Redis whose settings would lose watches and a global webhook URL no watch could
    use; then bring what an older taskwarden stored up to this version's layout. A Redis that
    does not answer yet (started after us, restarting) is waited for, for a few minutes."""
    log = logs.get("taskwarden.cli")
    client = connection.connect(
        url, decode_responses=True, socket_connect_timeout=5, socket_timeout=5
    )
    try:
        wait_reachable(
            client, url, on_wait=lambda pause: log.warning("redis.waiting", retry_in=pause)
        )
        for warning in check_redis(client):
            log.warning("redis.unsafe", warning=warning)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    hook = settings.webhooks.url
    if hook is not None and (why := webhooks.refusal(settings, hook)) is not None:
        raise click.ClickException(f"TASKWARDEN_WEBHOOKS__URL: {why}")
    upgrade(url, settings)


def upgrade(url: str, settings: Settings) -> None:
    """Bring what an older taskwarden stored up to this version's layout (once; then one GET)."""
    store = Store.from_url(url, **settings.store_options())
    try:
        done = store.backfill_indexes()
    finally:
        store.close()
    if done.ran:
        logs.get("taskwarden.cli").info(
            "store.backfilled", watches=done.watches, index_entries_added=done.added
        )


def outage_pause(failures: int) -> float:
    """Seconds to wait before retrying after ``failures`` failed reads in a row (1: the first)."""
    return float(min(OUTAGE_BACKOFF_MAX, 0.5 * 2 ** min(failures - 1, 10)))


@contextmanager
def open_store(settings: Settings, *, timeout: float | None = None) -> Iterator[Store]:
    """The store; ``timeout`` bounds each reply (a blocking read needs more than it blocks:
    redis-py 8's default, 5 s, would end every quiet one)."""
    with redis_url(settings) as url:
        store = Store.from_url(url, timeout=timeout, **settings.store_options())
        try:
            yield store
        finally:
            store.close()


def parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        out[key] = value
    return out


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def progress(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def find(store: Store, ref: str) -> Watch:
    """A watch by id or ``provider:remote_id``; exits with NOT_FOUND when there is none."""
    found = store.find(ref)
    if found is None:
        not_found(ref)
    return found


def not_found(ref: str) -> NoReturn:
    click.echo(f"error: no watch {ref!r}", err=True)
    sys.exit(ExitCode.NOT_FOUND)


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


def moment(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A time option's value as unix seconds (see ``parse_moment``)."""
    if value is None:
        return None
    try:
        return parse_moment(value, time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


F = TypeVar("F", bound=Callable[..., Any])


def filter_options(command: F) -> F:
    """The filters of ``ls``, for every command that takes watches by filter: ``state``,
    ``provider``, ``labels``, ``search`` and the four time bounds."""
    options = [
        click.option("--state", type=click.Choice([str(s) for s in State]), default=None),
        click.option("--provider", default=None),
        click.option(
            "--label", "labels", multiple=True, help="k=v, repeatable: every one must match."
        ),
        click.option("-q", "--search", default=None, help="Text in the id, remote id or name."),
        click.option(
            "--created-after", metavar="TIME", callback=moment, help="ISO-8601, unix s, 1h..."
        ),
        click.option("--created-before", metavar="TIME", callback=moment),
        click.option("--updated-after", metavar="TIME", callback=moment),
        click.option("--updated-before", metavar="TIME", callback=moment),
    ]
    for option in reversed(options):
        command = option(command)
    return command


FILTERS = ("state", "provider", "labels", "search", "created_after", "created_before",
           "updated_after", "updated_before")  # fmt: skip


def selection(filters: dict[str, Any]) -> Selection:
    """The :class:`~taskwarden.service.Selection` the ``filter_options`` values name."""
    return Selection(
        state=filters["state"], provider=filters["provider"],
        labels=parse_pairs(filters["labels"], "--label"), q=filters["search"] or None,
        created_after=filters["created_after"], created_before=filters["created_before"],
        updated_after=filters["updated_after"], updated_before=filters["updated_before"],
    )  # fmt: skip


def bar(progress: float | None, width: int = 10) -> str:
    if progress is None:
        return "-"
    filled = round(max(0.0, min(progress, 1.0)) * width)
    return "█" * filled + "░" * (width - filled) + f" {progress * 100:3.0f}%"


def print_table(table: Any) -> None:
    from rich.console import Console

    # off a terminal rich would wrap ids to 80 columns; pipes and scripts want whole lines
    Console(width=None if sys.stdout.isatty() else 200).print(table)
