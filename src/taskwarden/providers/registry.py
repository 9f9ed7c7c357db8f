"""Platform adapters, by name. Core code looks providers up here and talks to them only through
the :class:`~taskwarden.providers.base.Provider` protocol.

Built-in providers are listed in :data:`BUILTIN`. A third party ships one in its own package by
declaring an entry point in the group ``taskwarden.providers``, named after the provider, that
points to its factory (a callable ``(settings, client) -> Provider``)::

    [project.entry-points."taskwarden.providers"]
    acme = "acme_taskwarden:build"

A plugin cannot replace a built-in provider of the same name. A provider may also check
registrations up front (:class:`~taskwarden.providers.base.TargetValidator`): a built-in with a
module-level ``validate``, a plugin with a ``validate`` attribute on its factory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points

from taskwarden.config import Settings
from taskwarden.errors import ConfigError
from taskwarden.providers.base import ProviderFactory, Target, TargetValidator, accept

GROUP = "taskwarden.providers"

# name -> "module:factory"; imported only when asked for
BUILTIN: dict[str, str] = {
    "geobox": "taskwarden.providers.geobox:build",
    "up42": "taskwarden.providers.up42.adapter:build",
    "descarteslabs": "taskwarden.providers.descarteslabs.adapter:build",
    "earthone": "taskwarden.providers.earthone.adapter:build",
    "isahit": "taskwarden.providers.isahit.adapter:build",
    "http": "taskwarden.providers.generic.adapter:build",
}


@dataclass(frozen=True)
class ProviderInfo:
    """An installed provider: its name, where its factory lives, and whether it is built in."""

    name: str
    target: str
    builtin: bool
    load: Callable[[], ProviderFactory]


def _loader(target: str) -> Callable[[], ProviderFactory]:
    def load() -> ProviderFactory:
        module, _, attr = target.partition(":")
        factory: ProviderFactory = getattr(import_module(module), attr)
        return factory

    return load


@functools.cache
def _plugins() -> tuple[EntryPoint, ...]:
    # read once per process: scanning every installed distribution's metadata takes tens of
    # milliseconds, and every registration asks
    return tuple(entry_points(group=GROUP))


def installed() -> dict[str, ProviderInfo]:
    """Every provider this process can use: the built-ins and the entry-point plugins (as
    installed when the process first asked)."""
    found = {
        name: ProviderInfo(name, target, True, _loader(target)) for name, target in BUILTIN.items()
    }
    for ep in _plugins():
        if ep.name not in found:
            found[ep.name] = ProviderInfo(ep.name, ep.value, False, ep.load)
    return found


def factories() -> dict[str, ProviderFactory]:
    """Every installed provider's factory, by the name users register tasks under."""
    return {name: info.load() for name, info in installed().items()}


def names() -> list[str]:
    return sorted(installed())


def validator(name: str) -> TargetValidator:
    """The registration check of provider ``name`` (:func:`accept` when it declares none)."""
    info = installed().get(name)
    if info is None:
        return accept
    if info.builtin:
        module = import_module(info.target.partition(":")[0])
        found = getattr(module, "validate", None)
    else:
        found = getattr(info.load(), "validate", None)
    return found if callable(found) else accept


def validate(settings: Settings, name: str, target: Target) -> None:
    """Raise PermanentError when provider ``name`` says ``target`` cannot be watched."""
    validator(name)(settings, target)


def check_settings(settings: Settings) -> None:
    """Raise ConfigError when a per-provider setting names a provider nobody installed.

    Run at start-up by the entry points (the CLI, ``celery_app``), not inside ``Settings``:
    knowing the providers means reading the installed packages' entry points, which is this
    module's business, not the settings'.
    """
    known = names()
    for variable, named in (
        ("TASKWARDEN_RETRY_POLICIES", settings.retry_policies),
        ("TASKWARDEN_RATE_LIMITS", settings.rate_limits),
    ):
        unknown = sorted(set(named) - set(known))
        if unknown:
            raise ConfigError(
                f"{variable}__{unknown[0].upper()}: unknown provider {unknown[0]!r};"
                f" known: {', '.join(known)}"
            )
