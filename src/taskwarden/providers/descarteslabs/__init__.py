"""Descartes Labs (1.x platform): vector copy/delete jobs and exports. The adapter
(:mod:`.adapter`) and its JWT refresh (:mod:`.auth`)."""

from taskwarden.providers.descarteslabs.adapter import DescartesLabsProvider, build, validate

__all__ = ["DescartesLabsProvider", "build", "validate"]
