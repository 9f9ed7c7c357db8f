"""A v2 processing job's results archived as up42-py 4.3 reaches them: the STAC collection, its
items page by page, each asset by download-url and an unauthenticated signed URL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskwarden.config.settings import HttpSettings
from taskwarden.errors import OutputInvalid, ProviderUnavailable, UrlRefused
from taskwarden.providers.base import OutputRef, Target
from taskwarden.providers.up42 import adapter as up42
from taskwarden.simulator.server import SimulatorServer

from .up42_kit import archive, call, listing, read_all, reset, sha

ITEMS = "v2/assets/stac/collections/{id}/items"
DOWNLOAD_URL = "v2/assets/{asset}/download-url"
SIGNED = "signed-assets/{asset}/{object}"


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    """Signed URLs on another origin (localhost), as on the platform (storage.googleapis.com)."""
    reset(server).up42.configure({"storage_host": "localhost"})
    return server


def items(count: int, **asset: Any) -> list[dict[str, Any]]:
    return [{"id": f"item-{i}", "assets": [{"key": "data", **asset}]} for i in range(count)]


def test_every_item_and_asset_is_archived_byte_for_byte(sim: SimulatorServer) -> None:
    """job.json, collection.json, each item's JSON and each asset, byte for byte, over three
    pages of items; one download-url and one signed GET per asset; sources name the asset."""
    job = sim.up42.add_processing(settle_seconds=None, page_size=2, items=items(5))
    got = archive(sim, Target(job.id))
    assert list(got)[:2] == ["job.json", "collection.json"]
    assert [n for n in got if n.endswith(".json")][2:] == [f"item-item-{i}.json" for i in range(5)]
    assert json.loads(got["item-item-3.json"])["id"] == "item-3"
    assert json.loads(got["collection.json"])["id"] == job.spec.collection_id
    assets = {f"{a.filename}.tif": job.assets_sha256[a.spec.id] for a in job.assets}
    assert {name: sha(got[name]) for name in assets} == assets
    refs = [r for r in listing(sim, Target(job.id)) if r.key.startswith("asset:")]
    assert [r.source for r in refs] == [f"up42:v2/assets/{a.spec.id}" for a in job.assets]
    stats = sim.stats
    assert stats.count(route=ITEMS, task=job.spec.collection_id) == 3 * 2  # two listings
    assert stats.count(route=DOWNLOAD_URL) == 5 and stats.count(route=SIGNED) == 5


def test_assets_are_named_as_the_sdk_names_them(sim: SimulatorServer) -> None:
    """response-content-disposition's filename plus the URL's suffix; without one, the item
    and the asset key."""
    job = sim.up42.add_processing(
        settle_seconds=None,
        items=[{"id": "a", "assets": [{"key": "data", "filename": "S2 scene", "suffix": ".tif"},
                                      {"key": "meta", "disposition": False, "suffix": ".json"}]}],
    )  # fmt: skip
    got = archive(sim, Target(job.id))
    by_id = {a.spec.key: job.assets_sha256[a.spec.id] for a in job.assets}
    assert sha(got["S2 scene.tif"]) == by_id["data"]
    assert sha(got["a_meta"]) == by_id["meta"]


def test_the_signed_url_is_fetched_without_our_token_through_the_guard(
    sim: SimulatorServer,
) -> None:
    """The signed GET carries no Authorization (the simulator would refuse it) and goes
    through the URL guard: loopback storage is refused unless private addresses are allowed."""
    job = sim.up42.add_processing(settle_seconds=None, items=items(1))
    (asset,) = job.assets
    allowed = HttpSettings(allow_private_addresses=True, read_timeout=5.0, max_connections=4)
    got = archive(sim, Target(job.id), guard=True, http=allowed)
    assert sha(got[f"{asset.filename}.tif"]) == job.assets_sha256[asset.spec.id]
    assert sim.up42.rejected == 0
    with pytest.raises(UrlRefused, match="localhost"):
        archive(sim, Target(job.id), guard=True)


def test_an_expired_download_url_is_replaced(sim: SimulatorServer) -> None:
    """Signed URLs that answer ExpiredToken are asked for again, up to three; then the archive
    is retried later."""
    job = sim.up42.add_processing(settle_seconds=None, items=items(1), expired_downloads=2)
    (asset,) = job.assets
    got = archive(sim, Target(job.id))
    assert sha(got[f"{asset.filename}.tif"]) == job.assets_sha256[asset.spec.id]
    assert sim.stats.count(route=DOWNLOAD_URL) == 3
    stale = sim.up42.add_processing(settle_seconds=None, items=items(1), expired_downloads=9)
    with pytest.raises(ProviderUnavailable, match="ExpiredToken"):
        archive(sim, Target(stale.id))


def test_an_asset_off_the_api_is_listed_as_skipped(sim: SimulatorServer) -> None:
    """An asset whose href is not on the API is not fetched (the SDK has no file for it): it
    is a skipped ref with the reason, and no token travels there."""
    job = sim.up42.add_processing(
        settle_seconds=None,
        items=[{"id": "i", "assets": [{"key": "ext", "href": "https://example.com/x.tif"}]}],
    )
    refs = listing(sim, Target(job.id))
    (skipped,) = [r for r in refs if r.skipped]
    assert (skipped.name, skipped.source) == ("i_ext", "up42:https://example.com/x.tif")
    assert "not on the UP42 API" in (skipped.skipped or "")


def test_more_items_than_allowed_are_refused(sim: SimulatorServer) -> None:
    """A collection of more items than RESULTS_MAX_MEMBERS is OutputInvalid."""
    job = sim.up42.add_processing(settle_seconds=None, page_size=2, items=items(5))
    with pytest.raises(OutputInvalid, match="more than 3 result items"):
        listing(sim, Target(job.id), results_max_members=3)


def test_a_failed_job_has_no_results_to_list(sim: SimulatorServer) -> None:
    """A job without results.collection archives its document only."""
    job = sim.up42.add_processing(outcome="failed", release_seconds=3600)
    assert [r.name for r in listing(sim, Target(job.id))] == ["job.json"]


def test_assets_are_opened_after_listing_with_fresh_urls(sim: SimulatorServer) -> None:
    """Listing asks for no download URL; each is asked for when its asset is opened, so a
    listing older than the URLs' lifetime still archives."""
    job = sim.up42.add_processing(settle_seconds=None, items=items(2), url_ttl=5)

    async def run(provider: up42.Up42Provider) -> dict[str, bytes]:
        refs: list[OutputRef] = list(await provider.list_outputs(Target(job.id)))
        assert sim.stats.count(route=DOWNLOAD_URL) == 0
        sim.clock.advance(60)
        return await read_all(provider, Target(job.id), refs)

    got = call(sim, run)
    assert sorted(sha(got[f"{a.filename}.tif"]) for a in job.assets) == sorted(
        job.assets_sha256.values()
    )
