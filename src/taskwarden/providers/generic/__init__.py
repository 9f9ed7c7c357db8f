"""The generic HTTP provider, registered as ``http``: a platform described by a profile in
settings. The adapter (:mod:`.adapter`), a profile's compiled spec (:mod:`.spec`) and its token
endpoint (:mod:`.auth`)."""

from taskwarden.providers.generic.adapter import GenericHttpProvider, build, validate

__all__ = ["GenericHttpProvider", "build", "validate"]
