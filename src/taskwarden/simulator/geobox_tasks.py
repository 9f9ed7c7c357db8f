"""Scripted Geobox tasks: their specs, documents, and the assets they publish.

A task shows ``PENDING``, ``PROGRESS`` (``current`` rising to ``progress_total``), then its
outcome's word. A succeeded task's ``result`` names one output: a file (``file_uuid``) or an
asset of ``asset_kind`` (``layer_uuid``, ``raster_uuid``, ``model_uuid``, …). Files, rasters and
3D models have bytes (``file_size`` of them, from the shared script's ``seed``), served with
the script's ``file_name`` and ``content_type``; a model with ``model_obj`` names a second
("obj") model that holds the content, as the SDK's ``Model.download`` expects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import Field, TypeAdapter, field_validator

from taskwarden.simulator.script import Phase, Script, ScriptedTask

WORDS: dict[Phase, str] = {
    "pending": "PENDING",
    "running": "PROGRESS",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "ABORTED",
}
AssetKind = Literal["layer", "raster", "model", "3dtiles", "table"]
ASSET_PATHS = {"layer": "vectorLayers", "raster": "rasters", "model": "3dmodels"}
ASSET_PATHS |= {"3dtiles": "3dtiles", "table": "tables"}
WITH_BYTES = frozenset({"file", "raster", "model"})


class GeoboxTaskSpec(Script):
    """The script of one simulated Geobox task (timing, outcome and file fields: :class:`Script`).

    ``success_asset`` publishes an ``asset_kind``; ``failure`` reports ``failure_msg`` and
    ``failure_type`` in ``result.detail``, or ``failure_errors`` as ``result.errors`` when set.
    ``output_uuid`` is the file's or asset's id; ``model_obj`` gives a model an ``obj`` model.
    """

    uuid: str = Field(default_factory=lambda: str(uuid4()))
    name: str = "simulated task"
    asset_kind: AssetKind = "layer"
    failure_msg: str = "simulated failure"
    failure_type: str = "geobox.SimulatedError"
    failure_errors: list[Any] | None = None
    output_uuid: str = Field(default_factory=lambda: str(uuid4()))
    model_obj: bool = False

    @field_validator("uuid", "output_uuid")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        if not value or "/" in value or "?" in value or "#" in value or len(value) > 256:
            raise ValueError("must be 1-256 characters without '/', '?' or '#'")
        return value


SPECS = TypeAdapter(list[GeoboxTaskSpec])


class GeoboxTask(ScriptedTask[GeoboxTaskSpec]):
    """A Geobox task as it plays (``script`` is its :class:`GeoboxTaskSpec`)."""

    __slots__ = ()

    @property
    def uuid(self) -> str:
        return self.script.uuid

    @property
    def output_uuid(self) -> str:
        return self.script.output_uuid

    @property
    def obj_uuid(self) -> str | None:
        """The uuid of the model holding a ``model_obj`` model's content."""
        script = self.script
        if self.output_kind() != "model" or not script.model_obj:
            return None
        return f"{script.output_uuid}-obj"

    @property
    def content_uuid(self) -> str:
        """The asset whose download serves the bytes (an obj model's, when there is one)."""
        return self.obj_uuid or self.output_uuid

    def output_kind(self) -> str:
        return "file" if self.script.outcome == "success_file" else self.script.asset_kind

    def document(self, now: float, word: str | None = None) -> dict[str, Any]:
        """The task as ``GET tasks/{uuid}/`` shows it (``word`` overrides the state word)."""
        script = self.script
        phase, _ = self.phase(now)
        result: dict[str, Any] = {}
        if phase == "succeeded":
            result = {f"{self.output_kind()}_uuid": script.output_uuid}
        elif phase == "failed" and script.failure_errors is not None:
            result = {"errors": script.failure_errors}
        elif phase == "failed":
            result = {"detail": {"msg": script.failure_msg, "type": script.failure_type}}
        started, ended = self.started(now), self.ended(now)
        return {
            "uuid": script.uuid,
            "name": script.name,
            "state": word or WORDS[phase],
            "accepted_at": iso(self.epoch),
            "started_at": None if started is None else iso(started),
            "finished_at": None if ended is None else iso(ended),
            "result": result,
        }

    def asset(self, now: float, uuid: str) -> dict[str, Any]:
        """The description of the asset ``uuid`` (the output, or its obj model)."""
        kind = self.output_kind()
        body: dict[str, Any] = {
            "uuid": uuid,
            "name": f"{self.script.name} {kind}" + (" obj" if uuid == self.obj_uuid else ""),
            "created_at": iso(self.ended(now) or self.epoch),
            "task_uuid": self.uuid,
        }
        if kind == "layer":
            body["layer_type"] = "Polygon"
        if kind in WITH_BYTES:
            body["size"] = self.script.file_size  # the SDK's download progress bar reads it
        if uuid == self.output_uuid and self.obj_uuid is not None:
            body["obj"] = self.obj_uuid
        return body


def iso(epoch: float) -> str:
    # naive UTC with microseconds: the first format the SDK's _parse_datetime tries
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat("T", "microseconds")
