"""Jobs of the generic simulator: their shape, outputs and script, and the status document
they show (:mod:`taskwarden.simulator.generic` serves them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from taskwarden.simulator.script import Phase, Script, ScriptedTask
from taskwarden.simulator.script import output_sha256 as sha256_of


class GenericShape(BaseModel):
    """Where a status document puts each value (dotted paths), and its words.

    ``progress_style``: ``percent`` (0-100), ``fraction`` (0-1) or ``steps`` (current at
    ``progress_path``, total at ``progress_total_path``). ``output_url_key`` None lists outputs
    as bare URL strings. ``outputs_at``: ``api`` (credentials needed), ``storage`` (signed URLs,
    on ``storage_host`` when set, e.g. ``localhost``: another origin than ``127.0.0.1``) or
    ``redirect`` (the api URL answers 302 to storage). ``relative_urls`` gives root-relative ones.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    status_path: str = "data.attributes.phase"
    words: dict[Phase, str] = {
        "pending": "queued",
        "running": "in_progress",
        "succeeded": "completed",
        "failed": "errored",
        "cancelled": "canceled",
    }
    id_path: str | None = "data.id"
    name_path: str | None = "data.attributes.title"
    progress_path: str | None = "data.attributes.percent"
    progress_style: Literal["percent", "fraction", "steps"] = "percent"
    progress_total_path: str | None = "data.attributes.steps_total"
    error_path: str | None = "data.attributes.error.message"
    outputs_path: str | None = "data.attributes.outputs"
    output_url_key: str | None = "href"
    output_name_key: str | None = "filename"
    outputs_at: Literal["api", "storage", "redirect"] = "api"
    storage_host: str | None = None
    relative_urls: bool = False


class GenericOutput(BaseModel):
    """One more output file of a job (the first is the script's ``file_*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    size: int = Field(1024, ge=0)
    content_type: str = "application/octet-stream"


class GenericTaskSpec(Script):
    """The script of one simulated job (timing, outcome, first file: :class:`Script`).

    ``success_asset`` succeeds with no output files. ``failure`` reports ``failure_message`` at
    the shape's error path; ``succeeded_with_error`` puts an error there on a success too.
    """

    id: str = Field(default_factory=lambda: uuid4().hex)
    title: str = "simulated job"
    project: str = "demo"
    shape: GenericShape = GenericShape()
    failure_message: str = "simulated failure"
    succeeded_with_error: str | None = None
    extra_outputs: list[GenericOutput] = Field(default_factory=list)

    @field_validator("id", "project")
    @classmethod
    def _path_safe(cls, value: str) -> str:
        if not value or any(ch in value for ch in "/?#%") or len(value) > 128:
            raise ValueError("must be 1-128 characters without '/', '?', '#' or '%'")
        return value


SPECS = TypeAdapter(list[GenericTaskSpec])


class GenericTask(ScriptedTask[GenericTaskSpec]):
    """A job as it plays. Its first output's bytes come from ``seed``, the others' from
    ``seed/name``, so :attr:`checksums` are known without downloading."""

    __slots__ = ()

    @property
    def id(self) -> str:
        return self.script.id

    def outputs(self) -> list[tuple[GenericOutput, str]]:
        """The job's output files and their seeds (none unless ``success_file``)."""
        script = self.script
        if script.outcome != "success_file":
            return []
        first = GenericOutput(
            name=script.file_name, size=script.file_size, content_type=script.content_type
        )
        return [(first, self.seed)] + [(o, f"{self.seed}/{o.name}") for o in script.extra_outputs]

    @property
    def checksums(self) -> dict[str, str]:
        """sha256 of each output by name."""
        return {out.name: sha256_of(seed, out.size) for out, seed in self.outputs()}

    def document(
        self, now: float, link: Callable[[GenericOutput], str], word: str | None = None
    ) -> dict[str, Any]:
        """The status document at simulation time ``now``; ``link`` gives an output's URL and
        ``word`` overrides the status word."""
        script, shape = self.script, self.script.shape
        phase, current = self.phase(now)
        doc: dict[str, Any] = {}
        if shape.id_path:
            _put(doc, shape.id_path, script.id)
        if shape.name_path:
            _put(doc, shape.name_path, script.title)
        _put(doc, shape.status_path, word or shape.words[phase])
        if shape.progress_path:
            total = script.progress_total
            if shape.progress_style == "percent":
                _put(doc, shape.progress_path, round(100 * current / total, 1))
            elif shape.progress_style == "fraction":
                _put(doc, shape.progress_path, round(current / total, 4))
            else:
                _put(doc, shape.progress_path, current)
                _put(doc, shape.progress_total_path or "steps_total", total)
        if shape.error_path:
            errors: dict[str, str | None] = {
                "failed": script.failure_message,
                "cancelled": "canceled on request",
                "succeeded": script.succeeded_with_error,
            }
            _put(doc, shape.error_path, errors.get(phase))
        if shape.outputs_path:
            found = self.outputs() if phase == "succeeded" else []
            _put(doc, shape.outputs_path, [self._entry(out, link(out)) for out, _ in found])
        return doc

    def _entry(self, out: GenericOutput, url: str) -> Any:
        shape = self.script.shape
        if shape.relative_urls and "://" in url:
            url = "/" + url.split("://", 1)[1].partition("/")[2]
        if shape.output_url_key is None:
            return url
        entry = {shape.output_url_key: url}
        return entry | ({shape.output_name_key: out.name} if shape.output_name_key else {})


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = value
