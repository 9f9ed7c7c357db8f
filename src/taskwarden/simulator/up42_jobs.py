"""UP42's simulated v1 jobs with their job tasks, and what they show over time.

A v1 job is a :class:`~taskwarden.simulator.script.Script` (the shared timeline: pending, running,
then its ``outcome``) whose running time is shared out evenly between its tasks, one after the
other. Words over time:

    job   NOT_STARTED (first half of pending; ``NOT STARTED`` with ``not_started_word``), PENDING,
          RUNNING, then SUCCEEDED | FAILED or ERROR (``failure_word``) | CANCELLING for
          ``cancelling_seconds``, then CANCELLED (outcome ``aborted``, or a cancel request)
    task  NOT_STARTED until its turn, RUNNING, SUCCEEDED; a failing job fails its last task;
          a cancelled job cancels the task that was running

Each task's results are a real ``.tgz`` (or, with ``results_format="zip"``, a zip: 0.34.1
``utils.py`` unpacks both) whose members sit under ``output/``; member bytes are
:func:`~taskwarden.simulator.script.output_bytes` of ``"{seed}:{task index}:{member name}"``, so
``results_sha256`` knows every checksum. The job's own results are its last task's.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskwarden.simulator.script import Script, ScriptedTask, output_bytes

MAX_MEMBER = 16 * 1024 * 1024  # results are built in memory: simulated outputs stay small
MemberKind = Literal["file", "dir", "symlink", "hardlink", "fifo", "device"]


def path_segment(value: str) -> str:
    if not value or "/" in value or "?" in value or "#" in value or len(value) > 256:
        raise ValueError("must be 1-256 characters without '/', '?' or '#'")
    return value


def new_id() -> str:
    return str(uuid4())


class Up42Member(BaseModel):
    """One member of a results tarball: ``name`` is relative to ``output/`` unless it starts
    with ``/``. Kinds other than ``file`` exist to test what a client refuses to unpack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=512)
    size: int = Field(1024, ge=0, le=MAX_MEMBER)
    kind: MemberKind = "file"
    target: str = "data.json"  # where a link points

    @property
    def path(self) -> str:
        return self.name if self.name.startswith("/") else f"output/{self.name}"


def _default_members() -> list[Up42Member]:
    return [Up42Member(name="data.json", size=300), Up42Member(name="scene/scene.tif", size=4096)]


class Up42TaskSpec(BaseModel):
    """One job task: a workflow block's run, its results tarball, quicklooks and log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_id)
    name: str | None = None  # default "<block>:1"
    block: str = "sim-data-block"
    block_version: str = "1.0.0"
    members: list[Up42Member] = Field(default_factory=_default_members)
    quicklooks: list[str] = ["ql-1.jpeg"]
    quicklook_size: int = Field(512, ge=0, le=MAX_MEMBER)
    results_format: Literal["tgz", "zip"] = "tgz"

    @field_validator("id")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        return path_segment(value)

    @model_validator(mode="after")
    def _zip_kinds(self) -> Up42TaskSpec:
        odd = [m.name for m in self.members if m.kind in ("hardlink", "fifo", "device")]
        if self.results_format == "zip" and odd:
            raise ValueError(f"a zip cannot hold hard links, FIFOs or devices: {odd}")
        return self

    @field_validator("quicklooks")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return [path_segment(name) for name in value]


class Up42JobSpec(Script):
    """A v1 job (timing and ``outcome`` from :class:`Script`; its file fields are unused)."""

    id: str = Field(default_factory=new_id)
    project_id: str = "sim-project"
    name: str = "simulated job"
    workflow_name: str = "simulated workflow"
    mode: str = "DEFAULT"
    tasks: list[Up42TaskSpec] = Field(default_factory=lambda: [Up42TaskSpec()], min_length=1)
    failure_word: Literal["FAILED", "ERROR"] = "FAILED"
    failure_log: str = "ERROR: simulated failure"
    not_started_word: Literal["NOT_STARTED", "NOT STARTED"] = "NOT_STARTED"
    cancelling_seconds: float = Field(1.0, ge=0)
    url_ttl: float = Field(60.0, gt=0)  # lifetime of a signed results URL (simulation seconds)
    expired_downloads: int = Field(0, ge=0)  # the first N signed-URL fetches answer "expired"
    credits: int = Field(10, ge=0)  # GET …/jobs/{j}/credits: data.creditsUsed (0.34.1)

    @field_validator("id", "project_id")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        return path_segment(value)


def iso(epoch: float) -> str:
    """UP42's timestamps: UTC, milliseconds, ``Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


@dataclass(eq=False)
class Up42Task:
    """A task of a played job: its spec, place in the job, and its (lazily built) results."""

    spec: Up42TaskSpec
    index: int
    job: Up42Job
    _tarball: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def name(self) -> str:
        return self.spec.name or f"{self.spec.block}:1"

    def member_bytes(self, member: Up42Member) -> bytes:
        return output_bytes(f"{self.job.seed}:{self.index}:{member.name}", member.size)

    @property
    def results_sha256(self) -> dict[str, str]:
        """sha256 of each regular file in the results, by its path under ``output/``."""
        return {
            m.name: hashlib.sha256(self.member_bytes(m)).hexdigest()
            for m in self.spec.members
            if m.kind == "file"
        }

    @property
    def results_file(self) -> str:
        return "output.zip" if self.spec.results_format == "zip" else "output.tgz"

    def tarball(self) -> bytes:
        """The results ``.tgz`` or zip (built once; byte-identical every time)."""
        if self._tarball is None:
            zipped = self.spec.results_format == "zip"
            self._tarball = build_zip(self) if zipped else build_tarball(self)
        return self._tarball

    def quicklook_bytes(self, name: str) -> bytes:
        return output_bytes(
            f"{self.job.seed}:{self.index}:quicklook:{name}", self.spec.quicklook_size
        )

    @property
    def quicklooks_sha256(self) -> dict[str, str]:
        return {
            q: hashlib.sha256(self.quicklook_bytes(q)).hexdigest() for q in self.spec.quicklooks
        }

    def log(self, now: float) -> str:
        word = self.job.task_word(self.index, now)
        lines = [f"[{self.name}] block {self.spec.block} {self.spec.block_version} starting"]
        if word in ("RUNNING", "SUCCEEDED", "FAILED", "ERROR", "CANCELLED", "CANCELLING"):
            lines.append(f"[{self.name}] processing {len(self.spec.members)} outputs")
        if word == "SUCCEEDED":
            lines.append(f"[{self.name}] done")
        if word in ("FAILED", "ERROR"):
            lines.extend(self.job.spec.failure_log.splitlines())
        return "\n".join(lines) + "\n"

    def data_json(self) -> dict[str, Any]:
        return feature_collection(self)

    def document(self, now: float) -> dict[str, Any]:
        """The element of ``GET …/jobs/{j}/tasks/`` for this task."""
        word = self.job.task_word(self.index, now)
        started, finished = self.job.task_times(self.index, now)
        return {
            "id": self.id,
            "name": self.name,
            "status": word,
            "startedAt": None if started is None else iso(started),
            "finishedAt": None if finished is None else iso(finished),
            "block": {"name": self.spec.block, "version": self.spec.block_version},
            "blockVersion": self.spec.block_version,
        }


class Up42Job(ScriptedTask[Up42JobSpec]):
    """A v1 job as it plays; ``tasks`` are its job tasks in workflow order."""

    __slots__ = ("downloads", "tasks")

    def __init__(self, spec: Up42JobSpec, created: float, epoch: float) -> None:
        super().__init__(spec, spec.seed or spec.id, created, epoch)
        self.tasks = [Up42Task(t, i, self) for i, t in enumerate(spec.tasks)]
        self.downloads = 0  # signed-URL fetches so far (for ``expired_downloads``)

    @property
    def id(self) -> str:
        return self.script.id

    @property
    def spec(self) -> Up42JobSpec:
        return self.script

    @property
    def results(self) -> Up42Task:
        """The task whose results are the job's: the last block's."""
        return self.tasks[-1]

    def word(self, now: float) -> str:
        spec = self.script
        phase, _ = self.phase(now)
        if phase == "pending":
            early = now - self.created < spec.pending_seconds / 2
            return spec.not_started_word if early else "PENDING"
        if phase == "running":
            return "RUNNING"
        if phase == "succeeded":
            return "SUCCEEDED"
        if phase == "failed":
            return spec.failure_word
        return "CANCELLING" if now - self._end(now) < spec.cancelling_seconds else "CANCELLED"

    def _end(self, now: float) -> float:
        """Simulation time the job's run ended (by its script or by a cancel)."""
        if self.aborted_at is not None:
            return self.created + self.aborted_at
        return self.created + self.script.pending_seconds + self.script.running_seconds

    def _current(self, now: float) -> int:
        """Index of the task running at ``now`` (or that was, when the run ended)."""
        spec = self.script
        elapsed = min(now, self._end(now)) - self.created - spec.pending_seconds
        slot = spec.running_seconds / len(self.tasks)
        if slot <= 0 or elapsed < 0:
            return 0
        return min(len(self.tasks) - 1, int(elapsed / slot))

    def task_word(self, index: int, now: float) -> str:
        job = self.word(now)
        if job in ("NOT_STARTED", "NOT STARTED", "PENDING"):
            return self.script.not_started_word
        if job == "SUCCEEDED":
            return "SUCCEEDED"
        current = len(self.tasks) - 1 if job in ("FAILED", "ERROR") else self._current(now)
        if index < current:
            return "SUCCEEDED"
        if index > current:
            return self.script.not_started_word
        return "RUNNING" if job == "RUNNING" else job

    def task_times(self, index: int, now: float) -> tuple[float | None, float | None]:
        spec = self.script
        word = self.task_word(index, now)
        if word in ("NOT_STARTED", "NOT STARTED"):
            return None, None
        slot = spec.running_seconds / len(self.tasks)
        started = self.epoch + spec.pending_seconds + index * slot
        if word in ("RUNNING", "CANCELLING"):
            return started, None
        if word == "SUCCEEDED" and index < len(self.tasks) - 1:
            return started, started + slot
        return started, self.epoch + (self._end(now) - self.created)

    def document(self, now: float, word: str | None = None) -> dict[str, Any]:
        """``GET /projects/{p}/jobs/{j}``'s ``data`` (``word`` overrides the status)."""
        spec = self.script
        status = self.word(now)
        started, finished = self.task_times(0, now)[0], None
        if status in ("SUCCEEDED", "FAILED", "ERROR", "CANCELLED"):
            finished = self.epoch + (self._end(now) - self.created)
        return {
            "id": spec.id,
            "name": spec.name,
            "status": word or status,
            "createdAt": iso(self.epoch),
            "startedAt": None if started is None else iso(started),
            "finishedAt": None if finished is None else iso(finished),
            "workflowName": spec.workflow_name,
            "mode": spec.mode,
            "projectId": spec.project_id,
            "inputs": {},
        }


def build_tarball(task: Up42Task) -> bytes:
    """A results ``.tgz`` as UP42 ships it: members under ``output/``, gzip without a date."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        dirs = {"output"}
        tar.addfile(_info("output", tarfile.DIRTYPE))
        for member in task.spec.members:
            parent = member.path.rpartition("/")[0]
            if parent and parent not in dirs and not member.path.startswith("/"):
                dirs.add(parent)
                tar.addfile(_info(parent, tarfile.DIRTYPE))
            _add(tar, task, member)
    return raw.getvalue()


_KINDS = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "device": tarfile.CHRTYPE,
}


def _add(tar: tarfile.TarFile, task: Up42Task, member: Up42Member) -> None:
    if member.kind == "file":
        data = task.member_bytes(member)
        info = _info(member.path, tarfile.REGTYPE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    info = _info(member.path, _KINDS[member.kind])
    info.linkname = member.target
    tar.addfile(info)


def _info(path: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type = kind
    info.mtime = 1_700_000_000
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def build_zip(task: Up42Task) -> bytes:
    """The results as a zip (what orders shipped): members under ``output/``, fixed dates;
    a symlink is an entry whose Unix mode says so and whose content is its target."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in task.spec.members:
            info = zipfile.ZipInfo(member.path, date_time=(2023, 11, 14, 22, 13, 20))
            info.create_system = 3  # Unix, so that external_attr holds a mode
            if member.kind == "dir":
                info.filename = member.path.rstrip("/") + "/"
                info.external_attr = (stat.S_IFDIR | 0o755) << 16
                archive.writestr(info, b"")
            elif member.kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, member.target.encode())
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, task.member_bytes(member))
    return raw.getvalue()


def feature_collection(task: Up42Task) -> dict[str, Any]:
    """The task's ``data.json``: one feature per file, EPSG:4326."""
    ring = [[13.3, 52.4], [13.5, 52.4], [13.5, 52.6], [13.3, 52.6], [13.3, 52.4]]
    features = [
        {
            "type": "Feature",
            "bbox": [13.3, 52.4, 13.5, 52.6],
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"up42.data_path": m.name, "block": task.spec.block},
        }
        for m in task.spec.members
        if m.kind == "file"
    ]
    return {"type": "FeatureCollection", "features": features}
