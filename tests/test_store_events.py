"""The transitions stream, read through the store on a real Redis: by the CLI (sync) and by
the API's server-sent events (an asyncio follower on a connection of its own)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from taskwarden.models import Registration, watch_id
from taskwarden.store import EventFollower, Store

NOW = 1_700_000_000.0


def register(store: Store, *remote_ids: str) -> list[str]:
    return [
        store.register(Registration(provider="geobox", remote_id=r), NOW)[0].id for r in remote_ids
    ]


def test_latest_events_are_the_newest_first(store: Store) -> None:
    """``taskwarden events`` starts from the newest transitions, then reads on after them."""
    ids = register(store, "a", "b", "c")
    newest = store.latest_events(2)
    assert [fields["watch_id"] for _, fields in newest] == [ids[2], ids[1]]
    assert store.events(after=newest[0][0]) == []
    everything = store.events()
    assert [fields["watch_id"] for _, fields in everything] == ids
    assert store.events(after=everything[0][0], count=1) == everything[1:2]


def test_a_follower_pinned_at_the_newest_sees_only_what_comes_after(
    store: Store, redis_url: str
) -> None:
    """ "Only new ones" is pinned to the newest id before the first read, so an event written
    between the pin and the read is seen, and nothing older; with nothing new, a read waits,
    then answers []."""
    register(store, "old")

    async def follow() -> tuple[str, list[str], list[str]]:
        follower = EventFollower(redis_url, block_s=0.05)
        try:
            pinned = await follower.newest_id()
            await asyncio.to_thread(register, store, "new")
            got = await follower.read(pinned, 10)
            nothing = await follower.read(got[-1][0], 10)
            return pinned, [fields["watch_id"] for _, fields in got], [e for e, _ in nothing]
        finally:
            await follower.aclose()

    pinned, seen, nothing = asyncio.run(follow())
    assert pinned == store.latest_events(2)[1][0]  # the "old" registration's
    assert seen == [watch_id("geobox", "new")]
    assert nothing == []


async def _pin(redis_url: str) -> str:
    follower = EventFollower(redis_url, block_s=0.05)
    try:
        return await follower.newest_id()
    finally:
        await follower.aclose()


def test_an_empty_stream_pins_to_its_start(redis_url: str) -> None:
    """With no transition yet, "only new ones" starts at 0-0: the first one is seen."""
    assert asyncio.run(_pin(redis_url)) == "0-0"


def test_ping_answers_and_a_bounded_store_gives_up(store: Store) -> None:
    """Readiness pings the store; a store with a connect timeout fails fast on a Redis that is
    not there, rather than hanging the caller."""
    store.ping()
    away = Store.from_url("redis://127.0.0.1:1/0", connect_timeout=2, timeout=2)
    with pytest.raises(redis.ConnectionError):
        away.ping()
    away.close()
