"""TASKWARDEN_REDIS_URL: a Sentinel URL read into its sentinels, master name, database and
credentials, spelled for kombu's sentinel transport, and malformed ones refused by name."""

from __future__ import annotations

import pytest

from taskwarden.config import load_settings
from taskwarden.config.redis_url import SentinelTarget, celery_broker, sentinel_target
from taskwarden.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://localhost:6379/0", None),
        ("unix:///run/redis.sock", None),
        (
            "redis+sentinel://h1:26380,h2/mymaster/2",
            SentinelTarget((("h1", 26380), ("h2", 26379)), "mymaster", 2),
        ),
        (
            "redis+sentinel://:p%40ss@h1:1,[::1]:2/m",
            SentinelTarget((("h1", 1), ("::1", 2)), "m", 0, None, "p@ss"),
        ),
        (
            "redis+sentinel://app:secret@h1/m/0",
            SentinelTarget((("h1", 26379),), "m", 0, "app", "secret"),
        ),
    ],
)
def test_sentinel_urls_are_read(url: str, target: SentinelTarget | None) -> None:
    """Hosts default to port 26379 and the database to 0; credentials are unquoted."""
    assert sentinel_target(url) == target


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel:///m/0", "at least one sentinel"),
        ("redis+sentinel://h1:26379", "names the master"),
        ("redis+sentinel://h1/m/x", "is a number"),
        ("redis+sentinel://h1:port/m", "is a number"),
        ("sentinel://h1/m", "redis+sentinel://"),
    ],
)
def test_malformed_urls_are_refused_naming_the_variable(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKWARDEN_REDIS_URL", url)
    with pytest.raises(ConfigError, match="TASKWARDEN_REDIS_URL") as exc:
        load_settings()
    assert says in str(exc.value)


def test_celery_gets_kombus_sentinel_spelling() -> None:
    """One ``sentinel://`` URL per sentinel, the credentials on each (kombu reads the first's),
    and the master's name as a transport option; a plain URL is Celery's as it is."""
    broker, options = celery_broker("redis+sentinel://:p%40ss@h1:1,h2/mymaster/3")
    assert broker == "sentinel://:p%40ss@h1:1/3;sentinel://:p%40ss@h2:26379/3"
    assert options == {"master_name": "mymaster"}
    assert celery_broker("redis://h:6379/0") == ("redis://h:6379/0", {})
