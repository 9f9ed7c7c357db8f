"""Scripted Descartes Labs jobs and exports: their specs, documents and outputs.

A copy or delete job (:class:`DLJob`) shows ``PENDING``, ``RUNNING``, then its success or
failure word and its ``errors``; an export (:class:`DLExport`) has no document until it ends,
then a result with ``status``, the failure fields, and ``labels`` naming its storage key. The
exported GeoJSON and the log are functions of the script, so tests know their checksums.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from hashlib import sha256
from typing import Annotated, Any, Literal
from uuid import uuid4

from pydantic import Field, TypeAdapter, field_validator

from taskwarden.simulator.script import Outcome, Script, ScriptedTask


class DLJobSpec(Script):
    """A copy or delete job's script (timing and ``outcome`` from :class:`Script`).

    Success shows ``success_word``, failure ``failure_word``; ``errors`` are listed once the job
    ends (from the start of its run with ``errors_while_running``), whatever its state says.
    ``product_id`` is the new product for a copy, the product for a delete.
    """

    kind: Literal["copy", "delete"] = "copy"
    product_id: str = Field(default_factory=lambda: f"sim:{uuid4().hex[:16]}")
    job_id: str = Field(default_factory=lambda: uuid4().hex)
    success_word: Literal["DONE", "SUCCESS"] = "DONE"
    failure_word: Literal["FAILED", "FAILURE"] = "FAILED"
    errors: list[str] = Field(default_factory=list)
    errors_while_running: bool = False

    @field_validator("outcome")
    @classmethod
    def _no_abort(cls, value: Outcome) -> Outcome:
        if value == "aborted":
            raise ValueError("Descartes Labs jobs cannot be cancelled")
        return value

    @field_validator("product_id")
    @classmethod
    def _product(cls, value: str) -> str:
        return path_safe(value)


class DLExportSpec(Script):
    """An export's script: 404 until it ends, then ``SUCCESS`` with ``features`` points in the
    GeoJSON stored at ``key`` (unless ``stored`` is off), or ``FAILURE`` with the failure
    fields. ``outcome`` ``never`` keeps it 404 for ever."""

    kind: Literal["export"] = "export"
    product_id: str = Field(default_factory=lambda: f"sim:{uuid4().hex[:16]}")
    export_id: str = Field(default_factory=lambda: uuid4().hex)
    key: str | None = None  # the storage key; "<export_id>.geojson" when None
    features: int = Field(3, ge=0, le=100_000)
    exception_name: str = "ValueError"
    failure_type: Literal["exception", "executable_failure"] = "exception"
    runtime: float = Field(12.0, ge=0)
    peak_memory_usage: int = Field(64 * 2**20, ge=0)
    stored: bool = True
    log_text: str | None = None  # None: a log written from the script

    @field_validator("outcome")
    @classmethod
    def _no_abort(cls, value: Outcome) -> Outcome:
        if value == "aborted":
            raise ValueError("Descartes Labs exports cannot be cancelled")
        return value

    @field_validator("product_id", "export_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        return path_safe(value)


AnySpec = Annotated[DLJobSpec | DLExportSpec, Field(discriminator="kind")]
SPECS = TypeAdapter(list[AnySpec])


class DLJob(ScriptedTask[DLJobSpec]):
    """A copy or delete job as it plays."""

    __slots__ = ()

    @property
    def product_id(self) -> str:
        return self.script.product_id

    @property
    def registration(self) -> dict[str, Any]:
        """What to send ``taskwarden.track`` to watch this job."""
        kind = self.script.kind
        return {"provider": "descarteslabs", "remote_id": self.product_id, "params": {"kind": kind}}

    def document(self, now: float, word: str | None = None) -> dict[str, Any]:
        """The job status, as ``…/search/{copy,delete}/status`` shows it."""
        script = self.script
        phase, _ = self.phase(now)
        state = {"pending": "PENDING", "running": "RUNNING", "succeeded": script.success_word}
        errors: list[str] = []
        if phase in ("succeeded", "failed") or (phase == "running" and script.errors_while_running):
            errors = list(script.errors)
        started, ended = self.started(now), self.ended(now)
        attributes = {
            "state": word or state.get(phase, script.failure_word),
            "created": iso(self.epoch),
            "started": None if started is None else iso(started),
            "ended": None if ended is None else iso(ended),
            "errors": errors,
        }
        return resource(script.job_id, f"{script.kind}_job", attributes)


class DLExport(ScriptedTask[DLExportSpec]):
    """An export as it plays; ``data`` and ``log`` are its deterministic outputs."""

    __slots__ = ()

    @property
    def export_id(self) -> str:
        return self.script.export_id

    @property
    def product_id(self) -> str:
        return self.script.product_id

    @property
    def registration(self) -> dict[str, Any]:
        """What to send ``taskwarden.track`` to watch this export."""
        params = {"kind": "export", "product_id": self.product_id}
        return {"provider": "descarteslabs", "remote_id": self.export_id, "params": params}

    @property
    def key(self) -> str:
        return self.script.key or f"{self.script.export_id}.geojson"

    @property
    def result_key(self) -> str:
        return f"{self.script.export_id}.log"

    @property
    def data(self) -> bytes:
        """The exported GeoJSON FeatureCollection (a function of seed and feature count)."""
        return geojson_bytes(self.seed, self.script.features)

    @property
    def sha256(self) -> str:
        return sha256(self.data).hexdigest()

    @property
    def log(self) -> bytes:
        script = self.script
        if script.log_text is not None:
            return script.log_text.encode()
        head = f"export {script.export_id} of product {script.product_id} to {self.key}\n"
        if script.outcome == "failure":
            return (
                head + f"Traceback (most recent call last):\n{script.exception_name}\n"
            ).encode()
        return (head + f"wrote {script.features} features\n").encode()

    @property
    def log_sha256(self) -> str:
        return sha256(self.log).hexdigest()

    def result(self, now: float, word: str | None = None) -> dict[str, Any] | None:
        """The export's result document, or None while it is pending or running (a 404)."""
        script = self.script
        phase, _ = self.phase(now)
        if phase not in ("succeeded", "failed") and word is None:
            return None
        failed = phase == "failed"
        attributes = {
            "created": iso(self.epoch),
            "status": word or ("FAILURE" if failed else "SUCCESS"),
            "exception_name": script.exception_name if failed else None,
            "failure_type": script.failure_type if failed else None,
            "peak_memory_usage": script.peak_memory_usage,
            "runtime": script.runtime,
            "labels": ["sim", script.product_id, script.export_id, self.key],
            "result_key": self.result_key,
            "log_size_bytes": len(self.log),
            "stacktrace": f"{script.exception_name}: simulated" if failed else None,
        }
        return resource(script.export_id, "export", attributes)


@lru_cache(maxsize=64)
def geojson_bytes(seed: str, features: int) -> bytes:
    """A GeoJSON FeatureCollection of ``features`` points drawn from a PRNG seeded by ``seed``."""
    rng = random.Random(f"{seed}:geojson")
    items = [
        {
            "type": "Feature",
            "id": f"{seed}-{index}",
            "geometry": {
                "type": "Point",
                "coordinates": [round(rng.uniform(-180, 180), 6), round(rng.uniform(-90, 90), 6)],
            },
            "properties": {"index": index, "value": round(rng.random(), 6)},
        }
        for index in range(features)
    ]
    return json.dumps({"type": "FeatureCollection", "features": items}).encode()


def resource(resource_id: str, kind: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {"data": {"id": resource_id, "type": kind, "attributes": dict(attributes)}}


def summary(task: DLJob | DLExport) -> dict[str, Any]:
    """What the control API answers about a scripted job or export."""
    if isinstance(task, DLExport):
        return {
            "kind": "export",
            "export_id": task.export_id,
            "product_id": task.product_id,
            "key": task.key,
            "sha256": task.sha256,
            "log_sha256": task.log_sha256,
            "registration": task.registration,
        }
    return {
        "kind": task.script.kind,
        "product_id": task.product_id,
        "job_id": task.script.job_id,
        "registration": task.registration,
    }


def path_safe(value: str) -> str:
    if not value or "/" in value or "?" in value or "#" in value or len(value) > 256:
        raise ValueError("must be 1-256 characters without '/', '?' or '#'")
    return value


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
