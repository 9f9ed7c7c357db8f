"""Registration, the same from every door (the queue message, the CLI, the HTTP API).

Validate untrusted input, refuse it with one clear reason (and keep it in the dead-letter
stream), or create the watch; the same task registered twice is the same watch. A batch
(:func:`register_many`) is the same, item by item, in one round trip per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from taskwarden import logs, providers, webhooks
from taskwarden.config import Settings
from taskwarden.errors import InvalidRegistration, PermanentError
from taskwarden.models import Registration, Watch
from taskwarden.providers import names as provider_names
from taskwarden.providers.base import Target
from taskwarden.store import Store

log = logs.get("taskwarden.registration")

MAX_BATCH = 1000  # registrations one HTTP batch may hold
CHUNK = 500  # registrations validated and stored per round trip of a batch


@dataclass(frozen=True)
class Outcome:
    """What became of one registration of a batch: ``created``, ``exists`` (already watched:
    ``watch_id`` is the existing watch) or ``refused`` (``error`` says why)."""

    status: Literal["created", "exists", "refused"]
    watch_id: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, str]:
        out: dict[str, str] = {"status": self.status}
        if self.watch_id is not None:
            out["watch_id"] = self.watch_id
        if self.error is not None:
            out["error"] = self.error
        return out


def tally(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """How many of ``outcomes`` were created, already watched and refused."""
    return {
        status: sum(1 for o in outcomes if o.status == status)
        for status in ("created", "exists", "refused")
    }


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


def register_many(
    store: Store,
    settings: Settings,
    items: Sequence[object],
    *,
    source: str,
    now: float | None = None,
) -> list[Outcome]:
    """Register each of ``items`` as :func:`register` does, one :class:`Outcome` per item in
    order: each is validated on its own, and each refused one dead-lettered under ``source``
    with its own reason; the rest are stored in one round trip (plus one for the refusals).
    Safe to repeat after a failure (a Redis outage): what was created reads as ``exists``."""
    now = time.time() if now is None else now
    outcomes: list[Outcome | None] = [None] * len(items)
    valid: list[tuple[int, Registration]] = []
    refused: list[tuple[str, object]] = []
    for i, data in enumerate(items):
        try:
            valid.append((i, parse(data, settings)))
        except InvalidRegistration as exc:
            outcomes[i] = Outcome("refused", error=str(exc))
            refused.append((str(exc), data))
    stored = store.register_many([reg for _, reg in valid], now, settings.default_timeout)
    for (i, _), (wid, created) in zip(valid, stored, strict=True):
        outcomes[i] = Outcome("created" if created else "exists", wid)
    store.dead_letter_many(now, source, refused)
    return [o for o in outcomes if o is not None]
