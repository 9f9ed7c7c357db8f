"""UP42: v1 jobs, v1 job tasks and v2 processing jobs. The adapter (:mod:`.adapter`) over
the platform's API calls and token (:mod:`.api`), outputs (:mod:`.outputs`) and results tarballs
(:mod:`.results`)."""

from taskwarden.providers.up42.adapter import Up42Provider, build, validate

__all__ = ["Up42Provider", "build", "validate"]
