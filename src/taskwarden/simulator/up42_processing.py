"""UP42's simulated v2 processing jobs, and the STAC collection of their results.

A processing job walks ``created, licensed, valid, accepted`` (a quarter of ``pending_seconds``
each; the ``unlicensed``, ``invalid`` and ``rejected`` outcomes stop there), ``running``, then
``successful`` or ``failed``; ``settle_seconds`` later its credits settle into ``captured`` or
``released``. With ``settle_seconds`` None they never do: the job stays ``successful`` (or
``failed``), as the current API behaves (SDK 4.x deprecates ``captured`` and stops at
``successful``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskwarden.simulator.up42_jobs import iso, new_id, path_segment

ProcessingOutcome = Literal["successful", "failed", "invalid", "rejected", "unlicensed", "never"]
PENDING_WORDS = ("created", "licensed", "valid", "accepted")


class Up42ProcessingSpec(BaseModel):
    """A v2 processing job's script (see the module docstring for its words)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_id)
    process_id: str = "upsampling"
    account_id: str = "sim-account"
    workspace_id: str = "sim-workspace"
    pending_seconds: float = Field(0.0, ge=0)
    running_seconds: float = Field(0.0, ge=0)
    outcome: ProcessingOutcome = "successful"
    settle_seconds: float | None = Field(1.0, ge=0)
    errors: list[dict[str, str]] = [{"name": "SimulatedError", "message": "simulated failure"}]
    credits: int = Field(100, ge=0)
    collection_id: str = Field(default_factory=new_id)

    @field_validator("id", "collection_id")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        return path_segment(value)


@dataclass(eq=False)
class Up42Processing:
    """A v2 processing job as it plays."""

    spec: Up42ProcessingSpec
    created: float
    epoch: float

    @property
    def id(self) -> str:
        return self.spec.id

    def _marks(self) -> tuple[float, float, float | None]:
        spec = self.spec
        run_end = spec.pending_seconds + spec.running_seconds
        settle = None if spec.settle_seconds is None else run_end + spec.settle_seconds
        return spec.pending_seconds, run_end, settle

    def word(self, now: float) -> str:
        spec = self.spec
        elapsed = now - self.created
        pending, run_end, settle = self._marks()
        if elapsed < pending:
            return PENDING_WORDS[min(3, int(4 * elapsed / pending))]
        if spec.outcome in ("invalid", "rejected", "unlicensed"):
            return spec.outcome
        if spec.outcome == "never" or elapsed < run_end:
            return "running"
        if settle is None or elapsed < settle:
            return spec.outcome
        return "captured" if spec.outcome == "successful" else "released"

    def document(self, now: float, base_url: str, word: str | None = None) -> dict[str, Any]:
        """``GET /v2/processing/jobs/{id}``; ``base_url`` roots the collection's URL."""
        spec = self.spec
        status = self.word(now)
        pending, run_end, _ = self._marks()
        elapsed = now - self.created
        results: dict[str, Any] | None = None
        if status in ("successful", "captured"):
            collection = f"{base_url}/v2/assets/stac/collections/{spec.collection_id}"
            results = {"collection": collection, "errors": None}
        elif status in ("failed", "released", "invalid", "rejected", "unlicensed"):
            results = {"collection": None, "errors": spec.errors or None}
        started = finished = None
        if status in ("running", "successful", "failed", "captured", "released"):
            started = self.epoch + pending
        if status in ("successful", "failed", "captured", "released"):
            finished = self.epoch + run_end
        elif status in ("invalid", "rejected", "unlicensed"):
            finished = self.epoch + pending
        settled = status in ("captured", "released")
        return {
            "processID": spec.process_id,
            "jobID": spec.id,
            "accountID": spec.account_id,
            "workspaceID": spec.workspace_id,
            "definition": {"inputs": {"collection": "sim-input"}},
            "results": results,
            "creditConsumption": {"credits": spec.credits, "holdID": "sim"} if settled else None,
            "status": word or status,
            "created": iso(self.epoch),
            "started": None if started is None else iso(started),
            "finished": None if finished is None else iso(finished),
            "updated": iso(self.epoch + max(0.0, elapsed)),
        }

    def collection(self, base_url: str) -> dict[str, Any]:
        """The STAC collection ``results.collection`` points to."""
        spec = self.spec
        href = f"{base_url}/v2/assets/stac/collections/{spec.collection_id}"
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
                {"rel": "items", "href": f"{href}/items", "type": "application/geo+json"},
            ],
        }
