"""isahit lab's simulated annotation tasks: their scripts, status timelines and documents.

A task's life is a :class:`IsahitTaskSpec` played on the simulation clock from the moment it is
added, in isahit's own status words::

    configuring ──► pending ──► to-review ──► complete | reviewed ──► (reopened) ──► final again
    └ configuring_seconds ┘
    └──── pending_seconds ────┘└ running_seconds ┘         └ reopen_after ┘└ reopen_seconds ┘

``outcome`` ``never`` stays in ``to-review`` for good; isahit has no failure or cancellation, so
``failure`` and ``aborted`` are refused. A task can also be reopened by hand (the platform's
``PATCH …/reset`` and ``…/to-review``), which shows ``reopen_to`` for ``reopen_seconds``.

Documents are a function of the script, the task's creation time and the clock only, so a test
can compute what the platform served, and :func:`archive_bytes` is the encoding taskwarden's
archive uses for a task document (so :meth:`IsahitTask.archive_sha256` is its checksum).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import Field, field_validator, model_validator

from taskwarden.simulator.script import Script, ScriptedTask

STATUS_WORDS = ("configuring", "pending", "to-review", "complete", "reviewed")
FINAL_WORDS = frozenset({"complete", "reviewed"})
# the SDK's TaskOptionalFields; lastAnnotator is accepted and ignored (the SDK never sends it:
# it asks for jobs and derives it on the client)
OPTIONAL_FIELDS = frozenset(
    {"data", "jobs", "metrics", "data.mask", "jobs.history", "lastAnnotator"}
)
DEFAULT_PROJECT = "sim-project"
PROJECT_TYPE = "iat-rectangle"
LABELS = ("car", "truck", "pedestrian", "bicycle")
IMAGE = {"width": 1024, "height": 768}


def object_id() -> str:
    """A fresh id shaped like MongoDB's (24 hex digits), as isahit's ids are."""
    return uuid4().hex[:24]


def archive_bytes(document: Any) -> bytes:
    """A task document as taskwarden archives it: indented UTF-8 JSON, key order kept."""
    return json.dumps(document, ensure_ascii=False, indent=2).encode() + b"\n"


def iso(epoch: float) -> str:
    """A wall-clock time as JavaScript's ``toISOString()`` writes it (the API is Node)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class IsahitTaskSpec(Script):
    """The script of one simulated isahit task (timing fields: :class:`Script`; its file fields
    and ``progress_total`` mean nothing here).

    ``annotations`` rectangles appear in ``data.body`` once the task has been annotated (when
    it reaches ``to-review``); ``seed`` (the task id when None) draws them.
    """

    task_id: str = Field(default_factory=object_id)
    name: str = "image.jpg"
    project_id: str = DEFAULT_PROJECT
    batch_id: str = Field(default_factory=object_id)
    configuring_seconds: float = Field(0.0, ge=0)
    final_status: Literal["complete", "reviewed"] = "complete"
    reopen_after: float | None = Field(None, ge=0)
    reopen_to: Literal["pending", "to-review"] = "pending"
    reopen_seconds: float = Field(1.0, ge=0)
    annotations: int = Field(3, ge=0, le=1000)
    # what a task created through the API was given (POST batches/{b}/tasks)
    resources: list[Any] | None = None
    initial_body: dict[str, Any] | None = None
    custom: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task_id", "project_id", "batch_id")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        if not value or any(ch in value for ch in "/?#&") or len(value) > 256:
            raise ValueError("must be 1-256 characters without '/', '?', '#' or '&'")
        return value

    @model_validator(mode="after")
    def _isahit_can_do_it(self) -> IsahitTaskSpec:
        if self.outcome in ("failure", "aborted"):
            raise ValueError(
                "isahit lab tasks neither fail nor get cancelled: use success or never"
            )
        if self.configuring_seconds > self.pending_seconds:
            raise ValueError("configuring_seconds is the start of pending_seconds: at most that")
        return self


@dataclass(frozen=True)
class Reopened:
    """A task sent back by hand at simulation time ``at``, to ``word``."""

    at: float
    word: str


class IsahitTask(ScriptedTask[IsahitTaskSpec]):
    """An isahit task as it plays (``script`` is its :class:`IsahitTaskSpec`)."""

    __slots__ = ()

    @property
    def task_id(self) -> str:
        return self.script.task_id

    @property
    def annotated_at(self) -> float:
        """Simulation time the annotation is done (the task leaves ``pending``)."""
        return self.created + self.script.pending_seconds

    @property
    def final_at(self) -> float | None:
        """Simulation time the task first turns final; None when it never does."""
        if self.script.outcome == "never":
            return None
        return self.annotated_at + self.script.running_seconds

    def status(self, now: float, reopened: Reopened | None = None) -> tuple[str, float]:
        """The status word at simulation time ``now``, and since when it has shown."""
        spec = self.script
        if reopened is not None and now >= reopened.at:
            back = reopened.at + spec.reopen_seconds
            return (reopened.word, reopened.at) if now < back else (spec.final_status, back)
        configured = self.created + spec.configuring_seconds
        if now < configured:
            return "configuring", self.created
        if now < self.annotated_at:
            return "pending", configured
        final = self.final_at
        if final is None or now < final:
            return "to-review", self.annotated_at
        if spec.reopen_after is not None:
            start = final + spec.reopen_after
            back = start + spec.reopen_seconds
            if start <= now < back:
                return spec.reopen_to, start
            if now >= back:
                return spec.final_status, back
        return spec.final_status, final

    def wall(self, sim_time: float) -> float:
        """The wall-clock time a simulation time is shown as."""
        return self.epoch + (sim_time - self.created)

    def document(
        self,
        now: float,
        fields: frozenset[str] = frozenset(),
        reopened: Reopened | None = None,
        word: str | None = None,
    ) -> dict[str, Any]:
        """The task as the task list shows it, with the ``optionalFields`` asked for
        (``word`` overrides the status word, for the ``unknown_status`` fault)."""
        spec = self.script
        status, since = self.status(now, reopened)
        doc: dict[str, Any] = {
            "_id": spec.task_id,
            "name": spec.name,
            "projectId": spec.project_id,
            "batchId": spec.batch_id,
            "status": word or status,
            # {id, name}: what the SDK writes for an uploaded file and reads back
            "resources": spec.resources
            if spec.resources is not None
            else [{"id": f"{spec.task_id}-r0", "name": spec.name}],
            "properties": self.properties(status),
            "createdAt": iso(self.epoch),
            "updatedAt": iso(self.wall(since)),
        }
        if "data" in fields:
            doc["data"] = self._data(now, "data.mask" in fields)
        if "jobs" in fields:
            doc["jobs"] = self._jobs(now, "jobs.history" in fields)
        if "metrics" in fields:
            doc["metrics"] = self._metrics(now)
        return doc

    def archive_sha256(
        self, now: float, fields: frozenset[str], reopened: Reopened | None = None
    ) -> str:
        """SHA-256 of the document as taskwarden archives it (:func:`archive_bytes`)."""
        return hashlib.sha256(archive_bytes(self.document(now, fields, reopened))).hexdigest()

    def properties(self, status: str) -> dict[str, Any]:
        """``properties``: the reviewer's ``score`` once the task is final, no custom ones."""
        score = self._draw("score").randint(1, 5) if status in FINAL_WORDS else None
        return {"score": score, "custom": dict(self.script.custom)}

    # -- the optional parts -------------------------------------------------------------------
    def _draw(self, what: str) -> random.Random:
        return random.Random(f"{self.seed}:{what}")

    def _data(self, now: float, mask: bool) -> dict[str, Any]:
        """``data``: the label as the SDK's formatters read it (body with ``annotations`` and
        ``image``, ``metadata.body``, ``type``, ``projectType``, ``createdAt``, ``user``)."""
        annotated = now >= self.annotated_at
        body: dict[str, Any]
        if self.script.initial_body is not None:
            body = dict(self.script.initial_body)
        else:
            body = {"annotations": self._annotations() if annotated else [], "image": dict(IMAGE)}
        if mask:
            pixels = self._draw("mask").randbytes(48)
            body["mask"] = "data:image/png;base64," + base64.b64encode(pixels).decode()
        reviewed = self.script.final_status == "reviewed" and self.final_at is not None
        return {
            "body": body,
            "metadata": {"body": {"imageSize": dict(IMAGE)}},
            "type": "review" if reviewed and now >= (self.final_at or 0) else "default",
            "projectType": PROJECT_TYPE,
            "createdAt": iso(self.wall(self.annotated_at if annotated else self.created)),
            "user": _person("annotator", self.seed) if annotated else None,
        }

    def _annotations(self) -> list[dict[str, Any]]:
        """Rectangles in the SDK's IAT shape: labels by list, polygons with vertices
        ``[x1, y1, x2, y2]`` as fractions of the image."""
        rng = self._draw("annotations")
        found = []
        for index in range(self.script.annotations):
            x, y = rng.randint(0, 900), rng.randint(0, 650)
            width, height = rng.randint(10, 120), rng.randint(10, 110)
            label = LABELS[rng.randrange(len(LABELS))]
            vertices = [x / 1024, y / 768, (x + width) / 1024, (y + height) / 768]
            found.append(
                {
                    "uid": f"{self.task_id}-a{index}",
                    "labels": {"main": {"labels": [{"id": label, "name": label}]}},
                    "polygons": [
                        {
                            "id": f"{self.task_id}-a{index}-p0",
                            "geometry": {
                                "type": "rectangle",
                                "vertices": [round(v, 6) for v in vertices],
                            },
                        }
                    ],
                }
            )
        return found

    def _jobs(self, now: float, history: bool) -> list[dict[str, Any]]:
        jobs = [self._job("annotation", self.created, self.annotated_at, now, history)]
        final = self.final_at
        if self.script.final_status == "reviewed" and now >= self.annotated_at:
            done = final if final is not None else float("inf")
            jobs.append(self._job("review", self.annotated_at, done, now, history))
        return jobs

    def _job(
        self, kind: str, opened: float, done: float, now: float, history: bool
    ) -> dict[str, Any]:
        complete = now >= done
        job: dict[str, Any] = {
            "_id": f"{self.task_id}-{kind}",
            "type": kind,
            "status": "complete" if complete else "pending",
            "state": {
                "completedAt": iso(self.wall(done)) if complete else None,
                "completedBy": _person("reviewer" if kind == "review" else "annotator", self.seed)
                if complete
                else None,
            },
        }
        if history:
            steps = [{"status": "pending", "at": iso(self.wall(opened))}]
            if complete:
                steps.append({"status": "complete", "at": iso(self.wall(done))})
            job["history"] = steps
        return job

    def _metrics(self, now: float) -> dict[str, Any]:
        spec = self.script
        annotated = now >= self.annotated_at
        final = self.final_at
        reviewed = final is not None and now >= final
        return {
            "annotationTime": round(spec.pending_seconds - spec.configuring_seconds, 3)
            if annotated
            else None,
            "reviewTime": round(spec.running_seconds, 3) if reviewed else None,
            "annotationsCount": spec.annotations if annotated else 0,
        }


def _person(role: str, seed: str) -> dict[str, str]:
    # {id, name, email}: what the SDK's kili formatter reads of data.user
    number = random.Random(f"{seed}:{role}").randint(1, 40)
    name = f"{role.capitalize()} {number}"
    return {"id": f"{role}-{number}", "name": name, "email": f"{role}-{number}@sim.isahit.test"}
