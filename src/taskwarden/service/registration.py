"""Registration, the same from every door (the queue message, the CLI, the HTTP API).

Validate untrusted input, refuse it with one clear reason (and keep it in the dead-letter
stream), or create the watch; the same task registered twice is the same watch.
"""

from __future__ import annotations

import time

from taskwarden import logs, providers, webhooks
from taskwarden.config import Settings
from taskwarden.errors import InvalidRegistration, PermanentError
from taskwarden.models import Registration, Watch
from taskwarden.providers import names as provider_names
from taskwarden.providers.base import Target
from taskwarden.store import Store

log = logs.get("taskwarden.registration")


def parse(data: object, settings: Settings | None = None) -> Registration:
    """A validated registration, or :class:`InvalidRegistration` with every reason.

    With ``settings``, the provider checks the target too (its params, its id's shape: see
    :class:`~taskwarden.providers.base.TargetValidator`), and the webhook URL is held to the
    webhooks' address rules (:func:`check_webhook`), without a network call.
    """
    reg = Registration.parse(data, provider_names())
    if settings is not None:
        check_webhook(settings, reg)
        check_target(settings, reg)
    return reg


def check_webhook(settings: Settings, reg: Registration) -> None:
    """Raise InvalidRegistration when ``reg``'s webhook URL would be refused when sent to (a
    private, loopback or link-local address, unless allowed), as far as that shows without DNS."""
    if reg.webhook is None:
        return
    why = webhooks.refusal(settings, reg.webhook)
    if why is not None:
        raise InvalidRegistration(f"invalid registration: webhook: {why}")


def check_target(settings: Settings, reg: Registration) -> None:
    """Raise InvalidRegistration when ``reg``'s provider refuses its target."""
    try:
        providers.validate(settings, reg.provider, Target(reg.remote_id, reg.params))
    except PermanentError as exc:
        raise InvalidRegistration(f"{reg.provider} refuses this task: {exc}") from None
    except Exception:  # a plugin's broken check must not lose a registration: its poll decides
        log.exception("registration.validator_failed", provider=reg.provider)


def register(
    store: Store, settings: Settings, data: object, *, source: str, now: float | None = None
) -> tuple[Watch, bool]:
    """Create the watch ``data`` asks for unless it exists; return it and whether it is new.

    A refusal is dead-lettered under ``source`` ("queue", "cli", "api") and re-raised.
    """
    now = time.time() if now is None else now
    try:
        reg = parse(data, settings)
    except InvalidRegistration as exc:
        store.dead_letter(now, source, str(exc), data)
        raise
    return store.register(reg, now, settings.default_timeout)
