"""Platform adapters, by name. Core code looks providers up here and talks to them only through
the :class:`~taskwarden.providers.base.Provider` protocol."""

from __future__ import annotations

from taskwarden.providers.base import ProviderFactory


def factories() -> dict[str, ProviderFactory]:
    """Every built-in provider's factory, by the name users register tasks under."""
    from taskwarden.providers import geobox

    return {"geobox": geobox.build}


def names() -> list[str]:
    return sorted(factories())
