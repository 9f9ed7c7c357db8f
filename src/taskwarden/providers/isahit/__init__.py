"""isahit lab: one annotation task, or a whole batch. The adapter (:mod:`.adapter`) over the
task-list client and its login (:mod:`.client`)."""

from taskwarden.providers.isahit.adapter import IsahitProvider, build, validate

__all__ = ["IsahitProvider", "build", "validate"]
