"""What ``TASKWARDEN_REDIS_URL`` names: one Redis, or a master found through Redis Sentinel.

One Redis: ``redis://``, ``rediss://`` (TLS) or ``unix://``, as redis-py reads them.

Sentinel: ``redis+sentinel://[[user]:password@]host1[:port],host2[:port],.../master[/db]``,
the sentinels to ask (port 26379 unless given), the name they monitor the master under, and the
database (0 unless given). The credentials are the master's (and its replicas'); the sentinels
are asked without any. Every part of taskwarden (the store, the rate limiter, the events
follower, Celery's broker and producers) asks the sentinels for the master's address and asks
again after a failover; :func:`celery_broker` spells the same target the way kombu's sentinel
transport wants it. Pure parsing: nothing here connects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

SENTINEL_SCHEME = "redis+sentinel://"
PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """A master as Sentinel knows it: where to ask, under what name, and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def sentinel_target(url: str) -> SentinelTarget | None:
    """The target of a ``redis+sentinel://`` URL; None for any other URL.

    Raises ``ValueError`` saying what is wrong with a malformed one.
    """
    if not url.startswith(SENTINEL_SCHEME):
        return None
    rest = url[len(SENTINEL_SCHEME) :].split("?", 1)[0].split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
    if not sentinels:
        raise ValueError("a redis+sentinel:// URL names at least one sentinel host")
    master, _, db = path.strip("/").partition("/")
    if not master:
        raise ValueError("a redis+sentinel:// URL names the master: .../<master name>[/<db>]")
    if db and not db.isdigit():
        raise ValueError(f"the database of a redis+sentinel:// URL is a number, not {db!r}")
    return SentinelTarget(sentinels, unquote(master), int(db or 0), username, password)


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"a sentinel without a host: {item!r}")
    if port and not port.isdigit():
        raise ValueError(f"a sentinel port is a number, not {port!r}")
    return host, int(port) if port else SENTINEL_PORT


def check(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is a Redis URL taskwarden can use."""
    if url.startswith(SENTINEL_SCHEME):
        sentinel_target(url)
    elif not url.startswith(PLAIN_SCHEMES):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's ``broker_url`` for ``url`` and the ``broker_transport_options`` it needs.

    A plain URL is Celery's as it is. A Sentinel one becomes kombu's
    ``sentinel://host1:port/db;sentinel://host2:port/db`` with the master's name as the
    ``master_name`` transport option (kombu reads the credentials from the first URL).
    """
    target = sentinel_target(url)
    if target is None:
        return url, {}
    auth = ""
    if target.username or target.password is not None:
        auth = quote(target.username or "", safe="") + ":" + quote(target.password or "", safe="")
        auth += "@"
    broker = ";".join(
        f"sentinel://{auth}{f'[{host}]' if ':' in host else host}:{port}/{target.db}"
        for host, port in target.sentinels
    )
    return broker, {"master_name": target.master}
