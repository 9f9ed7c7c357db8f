"""Platform adapters, by name (:mod:`.registry`), and the port they implement (:mod:`.base`).

Core code looks providers up here and talks to them only through the
:class:`~taskwarden.providers.base.Provider` protocol; one module or package per platform:
``geobox``, ``up42/``, ``descarteslabs/``, ``earthone/``, ``isahit/``, and ``generic/`` (the
``http`` provider); ``bearer`` holds the refresh-token JWTs two of them share.
"""

from taskwarden.providers.registry import (
    BUILTIN,
    GROUP,
    ProviderInfo,
    check_settings,
    entry_point_reads,
    factories,
    installed,
    names,
    reset,
    validate,
    validator,
)

__all__ = [
    "BUILTIN",
    "GROUP",
    "ProviderInfo",
    "check_settings",
    "entry_point_reads",
    "factories",
    "installed",
    "names",
    "reset",
    "validate",
    "validator",
]
