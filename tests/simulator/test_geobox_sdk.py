"""The official ``geobox`` SDK (2.11, a test dependency) as the judge of what issue #10 added: its
own password login, ``Raster.download``/``get_content_file`` and ``Model.download`` against the
simulator, and the adapter archiving the same bytes under the same names."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from taskwarden.providers.base import Target
from taskwarden.simulator.server import SimulatorServer

from ..providers.test_geobox_assets import PASSWORD, archive, call


@pytest.fixture
def sdk(server: SimulatorServer) -> Iterator[Any]:
    """The SDK's client on the simulator, logged in with the simulator's password user."""
    import geobox

    client = geobox.GeoboxClient(
        host=f"{server.url}/geobox/", ver="v1/", username="sim-user", password="sim-password"
    )
    yield client
    client.session.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_sdks_login_is_the_adapters_field_for_field(server: SimulatorServer, sdk: Any) -> None:
    """GeoboxClient(username, password) posts a form to auth/token/; so does the adapter,
    with the same fields and content type, and both tokens work."""
    task = server.geobox.add_task()
    assert sdk.get_task(uuid=task.uuid).uuid == task.uuid  # the SDK's token is accepted
    call(server, lambda p: p.fetch_status(Target(task.uuid)), **PASSWORD)
    sdk_login, ours = server.geobox.logins
    assert ours == sdk_login
    assert sdk_login["form"] == {"username": "sim-user", "password": "sim-password"}


def test_the_sdks_raster_download_is_what_the_adapter_archives(
    server: SimulatorServer, sdk: Any, tmp_path: Path
) -> None:
    """Raster.download (progress bar on: it reads the raster's size) and get_content_file
    save the bytes the adapter streams from rasters/{u}/download/, under the same name."""
    task = server.geobox.add_task(
        outcome="success_asset", asset_kind="raster", file_name="ndvi.tif", file_size=200_000,
        content_type="image/tiff",
    )  # fmt: skip
    raster = sdk.get_task(uuid=task.uuid).output_asset
    saved = Path(raster.download(save_path=f"{tmp_path}/", progress_bar=True))
    content = Path(raster.get_content_file(save_path=f"{tmp_path}/content/", progress_bar=False))
    archived = call(server, lambda p: archive(p, task.uuid))
    assert saved.name in archived and saved.name == "ndvi.tif"
    assert sha256(saved.read_bytes()) == sha256(archived[saved.name]["body"]) == task.sha256
    assert sha256(content.read_bytes()) == task.sha256


@pytest.mark.parametrize("obj", [False, True])
def test_the_sdks_model_download_holds_what_the_adapter_archives(
    server: SimulatorServer, sdk: Any, tmp_path: Path, obj: bool
) -> None:
    """Model.download (through an obj model when it names one) zips '<name>.glb'; the
    adapter archives that .glb's bytes under that name."""
    task = server.geobox.add_task(
        name="campus", outcome="success_asset", asset_kind="model", file_size=30_000,
        model_obj=obj,
    )  # fmt: skip
    model = sdk.get_task(uuid=task.uuid).output_asset
    zipped = Path(model.download(save_path=f"{tmp_path}/", progress_bar=True))
    with zipfile.ZipFile(zipped) as bundle:
        (glb,) = bundle.namelist()
        inside = bundle.read(glb)
    archived = call(server, lambda p: archive(p, task.uuid))
    assert glb in archived
    assert sha256(inside) == sha256(archived[glb]["body"]) == task.sha256


def test_the_sdk_cannot_download_a_model_with_an_api_key(
    server: SimulatorServer, tmp_path: Path
) -> None:
    """The SDK sends the model download without ?apikey= (session.get, no join_url_params):
    the simulator refuses it as unauthenticated, while the adapter sends the key and works."""
    import geobox
    from geobox.exception import ApiRequestError

    task = server.geobox.add_task(outcome="success_asset", asset_kind="model")
    client = geobox.GeoboxClient(host=f"{server.url}/geobox/", ver="v1/", apikey="sim-apikey")
    try:
        model = client.get_task(uuid=task.uuid).output_asset
        with pytest.raises(ApiRequestError, match="401"):
            model.download(save_path=f"{tmp_path}/", progress_bar=False)
    finally:
        client.session.close()
    archived = call(server, lambda p: archive(p, task.uuid), apikey=SecretStr("sim-apikey"))
    assert any(sha256(item["body"]) == task.sha256 for item in archived.values())
