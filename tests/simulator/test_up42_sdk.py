"""The official ``up42-py`` 4.3 SDK as the judge of the UP42 simulator: its own OAuth classes,
session, job classes, pystac-client STAC client and asset downloads, run unchanged against it
(tests/up42_sdk.py replaces only the three URL builders of ``up42.host``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskwarden.simulator.server import SimulatorServer
from taskwarden.simulator.up42 import Up42Auth

from ..up42_sdk import keycloak_token_url, logged_in, point_at

ITEMS = "v2/assets/stac/collections/{id}/items"


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    server.up42.configure(Up42Auth().model_dump())
    return server


@pytest.fixture
def sdk(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``up42-py`` 4.3 logged in to the simulator."""
    return logged_in(sim, monkeypatch)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- login -------------------------------------------------------------------------------------


def sdk_auth(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch, password: str) -> Any:
    """The SDK's own ``Up42Auth`` with its ``AccountTokenRetriever`` (it fetches a token)."""
    point_at(sim, monkeypatch)
    from up42.http import config, oauth

    retriever = oauth.AccountTokenRetriever(config.AccountCredentialsSettings("sim-user", password))
    return oauth.Up42Auth(
        retriever, config.TokenProviderSettings(token_url=keycloak_token_url(sim))
    )


def test_the_sdks_oauth_code_gets_a_token_that_the_api_takes(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4.3's Up42Auth buys a token at the Keycloak route with its own form, and its session
    uses it on the API; the simulator saw exactly the SDK's fields."""
    auth = sdk_auth(sim, monkeypatch, "sim-password")
    from up42.http import session

    job = sim.up42.add_processing(settle_seconds=None)
    answer = session.create(auth).get(f"{sim.up42_url}/v2/processing/jobs/{job.id}")
    assert answer.json()["jobID"] == job.id
    (sent,) = sim.up42.tokens.requests
    assert sent.content_type == "application/x-www-form-urlencoded"
    assert [k for k, _ in sent.form] == ["grant_type", "username", "password", "client_id", "scope"]
    assert dict(sent.form)["client_id"] == "up42-sdk" and sim.up42.rejected == 0


def test_the_sdk_is_refused_without_a_known_client_and_with_a_wrong_password(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keycloak refuses a client it does not know and a wrong password; the SDK says
    WrongCredentials for both (oauth.py:61)."""
    point_at(sim, monkeypatch)
    from up42.http import oauth

    with pytest.raises(oauth.WrongCredentials):
        sdk_auth(sim, monkeypatch, "wrong")
    sim.up42.configure({"client_ids": ["another-client"]})
    with pytest.raises(oauth.WrongCredentials):
        sdk_auth(sim, monkeypatch, "sim-password")
    assert sim.up42.token_grants == 0


def test_the_sdk_renews_its_token_by_the_expires_in_it_is_given(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4.3 keeps a token until expires_in - 30 s: announced 30 s, it buys one per request;
    announced an hour, one for all of them."""
    job = sim.up42.add_processing(settle_seconds=None)
    for announced, grants in ((30, 4), (3600, 1)):
        sim.up42.configure({"announced_ttl": announced})
        before = sim.up42.token_grants
        auth = sdk_auth(sim, monkeypatch, "sim-password")
        from up42.http import session

        api = session.create(auth)
        for _ in range(3):
            api.get(f"{sim.up42_url}/v2/processing/jobs/{job.id}")
        assert sim.up42.token_grants - before == grants


def test_the_workspace_is_one_and_the_same(sim: SimulatorServer, sdk: Any) -> None:
    """userinfo's sub (4.3's workspace id), users/me and a processing job's workspaceID agree,
    so Job.all(workspace_id=...) of the SDK's own workspace finds the job."""
    job = sim.up42.add_processing(settle_seconds=None)
    workspace = sdk.base.workspace.id
    assert sdk.Job.get(job.id).workspace_id == workspace
    me = httpx.get(f"{sim.up42_url}/users/me", headers={"Authorization": "Bearer sim-token"})
    assert me.json()["data"]["id"] == workspace
    assert [j.id for j in sdk.Job.all(workspace_id=workspace)] == [job.id]


# --- processing jobs ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the SDK's own deprecation of CAPTURED
def test_the_sdk_tracks_a_processing_job_to_success(sim: SimulatorServer, sdk: Any) -> None:
    """Job.get and Job.track() follow the simulated job from created to successful and read
    its results and credits; Job.collection reads the STAC collection through pystac-client."""
    job = sim.up42.add_processing(pending_seconds=0.4, running_seconds=0.4, settle_seconds=None)
    tracked = sdk.Job.get(job.id)
    assert tracked.status == sdk.JobStatus.CREATED
    tracked.track(wait=0.05, retries=200)
    assert tracked.status == sdk.JobStatus.SUCCESSFUL
    assert tracked.credits == job.spec.credits
    assert tracked.collection_url.endswith(job.spec.collection_id)
    assert tracked.collection.id == job.spec.collection_id
    assert sim.stats.count(route="v2/processing/jobs/{id}", task=job.id) >= 3


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_the_sdk_waits_for_credits_to_be_released_after_a_failure(
    sim: SimulatorServer, sdk: Any
) -> None:
    """A failed job is tracked until released (4.3 does not take failed for final), with
    results.errors read as ValidationErrors."""
    job = sim.up42.add_processing(
        outcome="failed", running_seconds=0.2, release_seconds=0.3,
        errors=[{"name": "BandError", "message": "band 4 missing"}],
    )  # fmt: skip
    tracked = sdk.Job.get(job.id)
    tracked.track(wait=0.05, retries=200)
    assert tracked.status == sdk.JobStatus.RELEASED
    assert [(e.name, e.message) for e in tracked.errors] == [("BandError", "band 4 missing")]


def test_job_all_follows_the_relative_next_links(sim: SimulatorServer, sdk: Any) -> None:
    """Job.all pages through v2/processing/jobs by its relative next links."""
    jobs = [sim.up42.add_processing(process_id="detection").id for _ in range(3)]
    sim.up42.add_processing(process_id="other")
    listed = sdk.Job.all(process_id=["detection"], page_size=1)
    assert [j.id for j in listed] == jobs
    assert sim.stats.count(route="v2/processing/jobs") == 3


# --- results: STAC items and assets ------------------------------------------------------------


def test_the_sdk_pages_items_and_downloads_every_asset(
    sim: SimulatorServer, sdk: Any, tmp_path: Path
) -> None:
    """collection.get_items() follows the absolute next links page by page; each asset's
    .file POSTs download-url and downloads the signed URL without a token, under the name
    the URL gives, byte for byte what the simulator holds."""
    sim.up42.configure({"storage_host": "localhost", "tokens": []})  # a bearer there: refused
    job = sim.up42.add_processing(
        settle_seconds=None, page_size=2,
        items=[{"id": f"item-{i}", "assets": [{"key": "data", "filename": f"scene {i}"}]}
               for i in range(5)],
    )  # fmt: skip
    items = list(sdk.Job.get(job.id).collection.get_items())
    assert [item.id for item in items] == [f"item-{i}" for i in range(5)]
    assert sim.stats.count(route=ITEMS, task=job.spec.collection_id) == 3
    got = {}
    for item in items:
        path = item.assets["data"].file.download(tmp_path)
        got[path.name] = sha(path.read_bytes())
    expected = {f"scene {i}.tif": job.assets_sha256[a.spec.id] for i, a in enumerate(job.assets)}
    assert got == expected
    assert sim.up42.rejected == 0


def test_an_asset_off_the_api_has_no_file(sim: SimulatorServer, sdk: Any) -> None:
    """An asset whose href is not on the API is one the SDK cannot download (file is None)."""
    job = sim.up42.add_processing(
        settle_seconds=None,
        items=[{"assets": [{"key": "data"}, {"key": "ext", "href": "https://example.com/x.tif"}]}],
    )
    (item,) = sdk.Job.get(job.id).collection.get_items()
    assert item.assets["data"].file is not None and item.assets["ext"].file is None


def test_search_and_get_item_work_as_pystac_client_asks(sim: SimulatorServer, sdk: Any) -> None:
    """The STAC root's search (GET and POST, paged) and a collection's get_item answer."""
    job = sim.up42.add_processing(settle_seconds=None, items=[{"id": f"i{n}"} for n in range(3)])
    cid = job.spec.collection_id
    client = sdk.stac_client()
    for method in ("GET", "POST"):
        found = client.search(collections=[cid], limit=2, method=method)
        assert [i.id for i in found.items()] == ["i0", "i1", "i2"]
    assert client.get_collection(cid).get_item("i1").id == "i1"


def test_an_expired_signed_url_is_refused_to_the_sdk(
    sim: SimulatorServer, sdk: Any, tmp_path: Path
) -> None:
    """A download URL used after url_ttl answers 400 ExpiredToken; the SDK raises."""
    import requests

    job = sim.up42.add_processing(settle_seconds=None, url_ttl=30, items=[{}])
    (item,) = sdk.Job.get(job.id).collection.get_items()
    signed = item.assets["data"].file
    sim.clock.advance(31)
    with pytest.raises(requests.HTTPError, match="400"):
        signed.download(tmp_path)
