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

The installed packages' entry points are read once per process, on first use (reading them
opens every installed distribution's metadata: it was ~99% of a registration's cost), and kept;
:func:`reset` forgets them, for a process (a test) that installs a plugin after the first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points

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


class _Reads:
    """How many times this process read the entry points (see :func:`entry_point_reads`)."""

    count = 0


def installed() -> dict[str, ProviderInfo]:
    """Every provider this process can use: the built-ins and the entry-point plugins (read
    once per process: see :func:`reset`)."""
    return dict(_installed())


@cache
def _installed() -> dict[str, ProviderInfo]:
    _Reads.count += 1
    found = {
        name: ProviderInfo(name, target, True, _loader(target)) for name, target in BUILTIN.items()
    }
    for ep in entry_points(group=GROUP):
        if ep.name not in found:
            found[ep.name] = ProviderInfo(ep.name, ep.value, False, ep.load)
    return found


@cache
def _names() -> tuple[str, ...]:
    return tuple(sorted(_installed()))


def reset() -> None:
    """Forget the providers read so far: the next use reads the entry points again (for a
    process that installs a plugin after its first registration, such as a test)."""
    _installed.cache_clear()
    _names.cache_clear()
    validator.cache_clear()


def entry_point_reads() -> int:
    """How many times this process has read the installed packages' entry points."""
    return _Reads.count


def factories() -> dict[str, ProviderFactory]:
    """Every installed provider's factory, by the name users register tasks under."""
    return {name: info.load() for name, info in installed().items()}


def names() -> list[str]:
    return list(_names())


@cache
def validator(name: str) -> TargetValidator:
    """The registration check of provider ``name`` (:func:`accept` when it declares none)."""
    info = _installed().get(name)
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
