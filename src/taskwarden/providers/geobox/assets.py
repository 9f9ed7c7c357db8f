"""What a Geobox task's ``result`` names, and where each asset's description and bytes are.

The SDK's ``Task.output_asset`` (``geobox/task.py``) reads the first of these ``result`` keys
and fetches that asset's description, each ``?f=json``; three kinds can also be downloaded::

    file_uuid    files/{u}/info/     bytes: files/{u}/download/     (File.download)
    raster_uuid  rasters/{u}/        bytes: rasters/{u}/download/   (Raster.download)
    model_uuid   3dmodels/{u}/       bytes: 3dmodels/{u}/content/   (Model.download; when the
                                     model names an ``obj`` model, that one's content)
    layer_uuid   vectorLayers/{u}/   3dtiles_uuid  3dtiles/{u}/     table_uuid  tables/{u}/

A file and a raster are named as the SDK names them, by the download's ``Content-Disposition``;
a model as ``{name}.glb`` (the SDK ignores the header there and zips the ``.glb`` on the user's
disk; the archive keeps the platform's bytes). The SDK sends the model download with the bearer
token only, never ``?apikey=``; the files and rasters with either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from taskwarden import net


@dataclass(frozen=True)
class AssetKind:
    """One ``result`` key: its collection, what the description is archived as, and its
    download (relative to the asset's own path; None: the SDK downloads nothing)."""

    key: str
    collection: str
    archive_name: str
    download: str | None = None

    def info_path(self, uuid: str) -> str:
        if self.key == "file_uuid":
            return f"files/{segment(uuid)}/info/"
        return f"{self.collection}/{segment(uuid)}/"

    def download_path(self, uuid: str) -> str:
        assert self.download is not None
        return f"{self.collection}/{segment(uuid)}/{self.download}"

    @property
    def named_by_header(self) -> bool:
        """Whether the download's Content-Disposition names it (not for models)."""
        return self.key != "model_uuid"


# in the order the SDK's output_asset checks them
KINDS = (
    AssetKind("layer_uuid", "vectorLayers", "layer.json"),
    AssetKind("raster_uuid", "rasters", "raster.json", "download/"),
    AssetKind("model_uuid", "3dmodels", "model.json", "content/"),
    AssetKind("file_uuid", "files", "file_info.json", "download/"),
    AssetKind("3dtiles_uuid", "3dtiles", "3dtiles.json"),
    AssetKind("table_uuid", "tables", "table.json"),
)
BY_KEY = {kind.key: kind for kind in KINDS}


def download_name(kind: AssetKind, info: dict[str, Any], uuid: str) -> str:
    """The name an asset's bytes are archived under before the platform's header (if any)
    renames them: the description's ``name`` (a model's with ``.glb``), else the uuid."""
    announced = info.get("name")
    name = net.safe_filename(announced) if isinstance(announced, str) else None
    if kind.key == "model_uuid":
        return net.safe_filename(f"{name or uuid}.glb") or f"{segment(uuid)}.glb"
    return name or segment(uuid)


def segment(value: str) -> str:
    return quote(value, safe="")
