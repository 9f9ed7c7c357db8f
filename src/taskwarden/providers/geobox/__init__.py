"""Geobox: a ``geobox.task.Task`` and the assets it produced. The adapter (:mod:`.adapter`),
where each asset's description and bytes are (:mod:`.assets`), and the login (:mod:`.auth`)."""

from taskwarden.providers.geobox.adapter import (
    GeoboxProvider,
    build,
    failure_message,
    progress_fraction,
)

__all__ = ["GeoboxProvider", "build", "failure_message", "progress_fraction"]
