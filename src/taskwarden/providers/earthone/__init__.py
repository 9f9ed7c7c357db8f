"""EarthDaily EarthOne (the Descartes Labs platform's successor): compute jobs and whole
functions. The adapter (:mod:`.adapter`), its HTTP calls (:mod:`.api`) and what the platform's
documents mean (:mod:`.documents`); its JWTs come from :mod:`taskwarden.providers.bearer`."""

from taskwarden.providers.earthone.adapter import EarthOneProvider, build, validate

__all__ = ["EarthOneProvider", "build", "validate"]
