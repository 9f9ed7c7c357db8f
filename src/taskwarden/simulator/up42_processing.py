"""UP42's simulated v2 processing jobs, the STAC collection of their results, its items and
their assets.

A processing job walks ``created, licensed, valid, accepted`` (a quarter of ``pending_seconds``
each; the ``unlicensed``, ``invalid`` and ``rejected`` outcomes stop there), ``running``, then
``successful`` or ``failed``. ``settle_seconds`` after success the credits are captured
(``captured``); with ``settle_seconds`` None they never are and the job stays ``successful``,
as the current API behaves (up42-py 4.3 deprecates ``captured`` and ends tracking at
``successful``). A failed job is always released ``release_seconds`` later (``released``):
4.3 does not take ``failed`` for final and waits for ``released`` (``processing.py:73-80``).
``creditConsumption`` is shown from ``successful`` / ``failed`` on.

Once successful, the job's results are a STAC collection (``collection_id``) of ``items``, each
with ``assets`` whose ``href`` is ``{api}/v2/assets/{asset id}``: what up42-py 4.3's
``asset.file`` downloads through ``POST {href}/download-url`` (``stac.py:16-36``). Asset bytes
are :func:`~taskwarden.simulator.script.output_bytes` of ``"{job}:{item}:{asset key}"``, so
``assets_sha256`` knows every checksum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskwarden.simulator.script import output_bytes
from taskwarden.simulator.up42_http import ACCOUNT, STAC, WORKSPACE
from taskwarden.simulator.up42_jobs import MAX_MEMBER, iso, new_id, path_segment

ProcessingOutcome = Literal["successful", "failed", "invalid", "rejected", "unlicensed", "never"]
PENDING_WORDS = ("created", "licensed", "valid", "accepted")
RAN = ("successful", "failed", "captured", "released")
REFUSED = ("invalid", "rejected", "unlicensed")
RING = [[13.3, 52.4], [13.5, 52.4], [13.5, 52.6], [13.3, 52.6], [13.3, 52.4]]


class Up42ValidationError(BaseModel):
    """One entry of ``results.errors``: exactly the fields of 4.3's ``ValidationError``
    (``processing.py:16-19``), which raises ``TypeError`` on any other key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    message: str


class Up42AssetSpec(BaseModel):
    """One asset of a result item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = "data"
    id: str = Field(default_factory=new_id)
    size: int = Field(2048, ge=0, le=MAX_MEMBER)
    media_type: str = "image/tiff; application=geotiff"
    suffix: str = Field(".tif", pattern=r"^(\.[A-Za-z0-9]{1,8})?$")  # of the signed object
    # the name the signed URL gives (response-content-disposition); None: "<item>_<key>"
    filename: str | None = None
    disposition: bool = True  # whether the signed URL names the file at all
    href: str | None = None  # an href off the API (4.3's asset.file is then None)

    @field_validator("id")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        return path_segment(value)


class Up42ItemSpec(BaseModel):
    """One STAC item of a job's results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_id)
    assets: list[Up42AssetSpec] = Field(default_factory=lambda: [Up42AssetSpec()])

    @field_validator("id")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        return path_segment(value)

    @model_validator(mode="after")
    def _unique_keys(self) -> Up42ItemSpec:
        if len({a.key for a in self.assets}) != len(self.assets):
            raise ValueError(f"item {self.id}: asset keys must be unique")
        return self


def _default_items() -> list[Up42ItemSpec]:
    return [Up42ItemSpec(), Up42ItemSpec()]


class Up42ProcessingSpec(BaseModel):
    """A v2 processing job's script (see the module docstring for its words)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_id)
    process_id: str = "upsampling"
    account_id: str = ACCOUNT
    workspace_id: str = WORKSPACE
    pending_seconds: float = Field(0.0, ge=0)
    running_seconds: float = Field(0.0, ge=0)
    outcome: ProcessingOutcome = "successful"
    settle_seconds: float | None = Field(1.0, ge=0)  # successful → captured; None: never
    release_seconds: float = Field(1.0, ge=0)  # failed → released
    errors: list[Up42ValidationError] = [
        Up42ValidationError(name="SimulatedError", message="simulated failure")
    ]
    credits: int = Field(100, ge=0)
    collection_id: str = Field(default_factory=new_id)
    items: list[Up42ItemSpec] = Field(default_factory=_default_items)
    page_size: int = Field(10, ge=1)  # items per STAC page when the client sends no limit
    url_ttl: float = Field(30.0, gt=0)  # a signed asset URL's lifetime (UP42's docs: 30 s)
    expired_downloads: int = Field(0, ge=0)  # the first N signed asset fetches are "expired"

    @field_validator("id", "collection_id")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        return path_segment(value)

    @model_validator(mode="after")
    def _unique_ids(self) -> Up42ProcessingSpec:
        assets = [a.id for i in self.items for a in i.assets]
        if len(set(assets)) != len(assets) or len({i.id for i in self.items}) != len(self.items):
            raise ValueError("item ids and asset ids must be unique")
        return self


@dataclass(frozen=True)
class Asset:
    """An asset of a played job, with what it belongs to."""

    job: Up42Processing
    item: Up42ItemSpec
    spec: Up42AssetSpec

    @property
    def filename(self) -> str:
        return self.spec.filename or f"{self.item.id}_{self.spec.key}"

    def content(self) -> bytes:
        return output_bytes(f"{self.job.id}:{self.item.id}:{self.spec.key}", self.spec.size)


@dataclass(eq=False)
class Up42Processing:
    """A v2 processing job as it plays."""

    spec: Up42ProcessingSpec
    created: float
    epoch: float
    downloads: int = 0  # signed asset fetches so far (for ``expired_downloads``)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def assets(self) -> list[Asset]:
        return [Asset(self, item, a) for item in self.spec.items for a in item.assets]

    @property
    def assets_sha256(self) -> dict[str, str]:
        """sha256 of each downloadable asset's bytes, by asset id."""
        return {
            a.spec.id: hashlib.sha256(a.content()).hexdigest()
            for a in self.assets
            if a.spec.href is None
        }

    def _marks(self) -> tuple[float, float]:
        spec = self.spec
        return spec.pending_seconds, spec.pending_seconds + spec.running_seconds

    def word(self, now: float) -> str:
        spec = self.spec
        elapsed = now - self.created
        pending, run_end = self._marks()
        if elapsed < pending:
            return PENDING_WORDS[min(3, int(4 * elapsed / pending))]
        if spec.outcome in REFUSED:
            return spec.outcome
        if spec.outcome == "never" or elapsed < run_end:
            return "running"
        if spec.outcome == "failed":
            return "released" if elapsed >= run_end + spec.release_seconds else "failed"
        if spec.settle_seconds is None or elapsed < run_end + spec.settle_seconds:
            return "successful"
        return "captured"

    def delivered(self, now: float) -> bool:
        """Whether the results exist (the collection, its items and assets)."""
        return self.word(now) in ("successful", "captured")

    def document(self, now: float, base_url: str, word: str | None = None) -> dict[str, Any]:
        """``GET /v2/processing/jobs/{id}``; ``base_url`` roots the collection's URL."""
        spec = self.spec
        status = self.word(now)
        pending, run_end = self._marks()
        elapsed = now - self.created
        results: dict[str, Any] | None = None
        if status in ("successful", "captured"):
            collection = f"{base_url}/{STAC}/collections/{spec.collection_id}"
            results = {"collection": collection, "errors": None}
        elif status in ("failed", "released", *REFUSED):
            errors = [e.model_dump() for e in spec.errors]
            results = {"collection": None, "errors": errors or None}
        started = self.epoch + pending if status in ("running", *RAN) else None
        finished = None
        if status in RAN:
            finished = self.epoch + run_end
        elif status in REFUSED:
            finished = self.epoch + pending
        credits = {"credits": spec.credits, "holdID": f"hold-{spec.id}"} if status in RAN else None
        return {
            "processID": spec.process_id,
            "jobID": spec.id,
            "accountID": spec.account_id,
            "workspaceID": spec.workspace_id,
            "definition": {"inputs": {"collection": "sim-input"}},
            "results": results,
            "creditConsumption": credits,
            "status": word or status,
            "created": iso(self.epoch),
            "started": None if started is None else iso(started),
            "finished": None if finished is None else iso(finished),
            "updated": iso(self.epoch + max(0.0, elapsed)),
        }

    def collection(self, base_url: str) -> dict[str, Any]:
        """The STAC collection ``results.collection`` points to."""
        spec = self.spec
        href = f"{base_url}/{STAC}/collections/{spec.collection_id}"
        root = f"{base_url}/{STAC}/"
        return {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": spec.collection_id,
            "title": f"{spec.process_id} results",
            "description": f"Results of processing job {spec.id}",
            "license": "proprietary",
            "extent": {
                "spatial": {"bbox": [[13.3, 52.4, 13.5, 52.6]]},
                "temporal": {"interval": [[iso(self.epoch), None]]},
            },
            "links": [
                {"rel": "self", "href": href, "type": "application/json"},
                {"rel": "root", "href": root, "type": "application/json"},
                {"rel": "parent", "href": root, "type": "application/json"},
                {"rel": "items", "href": f"{href}/items", "type": "application/geo+json"},
            ],
        }

    def item(self, item: Up42ItemSpec, base_url: str) -> dict[str, Any]:
        """One result item as STAC, with the UP42 fields 4.3's ``Item.up42`` reads."""
        spec = self.spec
        collection = f"{base_url}/{STAC}/collections/{spec.collection_id}"
        assets = {}
        for asset in item.assets:
            href = asset.href or f"{base_url}/v2/assets/{asset.id}"
            assets[asset.key] = {
                "href": href,
                "type": asset.media_type,
                "title": Asset(self, item, asset).filename,
                "roles": ["data"],
            }
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": [],
            "id": item.id,
            "collection": spec.collection_id,
            "geometry": {"type": "Polygon", "coordinates": [RING]},
            "bbox": [13.3, 52.4, 13.5, 52.6],
            "properties": {
                "datetime": iso(self.epoch),
                "up42-system:job_id": spec.id,
                "up42-system:account_id": spec.account_id,
                "up42-system:workspace_id": spec.workspace_id,
                "up42-system:source": "processing",
                "up42-system:metadata_version": "1.0",
                "up42-user:title": None,
                "up42-user:tags": [],
            },
            "links": [
                {"rel": "self", "href": f"{collection}/items/{item.id}"},
                {"rel": "collection", "href": collection},
                {"rel": "parent", "href": collection},
                {"rel": "root", "href": f"{base_url}/{STAC}/"},
            ],
            "assets": assets,
        }
