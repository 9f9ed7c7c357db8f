"""Webhooks: a signed POST when a watch reaches a final state, retried until delivered.

Where a delivery comes from and how it is kept, durably, in Redis (by the store,
:mod:`taskwarden.store.webhooks`; names in :mod:`taskwarden.keys`):

1. Every transition is an entry on the events stream (``keys.EVENTS``, written by the store in
   the same script as the change). :func:`taskwarden.webhooks.outbox.pump`, run by every dispatch
   tick, reads new entries through a consumer group (``keys.WEBHOOKS_GROUP``), and for each
   final one adds a delivery per target (the watch's own ``webhook`` URL, the global
   ``TASKWARDEN_WEBHOOKS__URL``): its record in ``keys.WEBHOOKS_PENDING`` and its due time in
   ``keys.WEBHOOKS_DUE``, both written only if absent (the id is ``<event id>:<target>``), then
   acknowledges the entries. A crash in between leaves them pending in the group, and the next
   tick reads them again.
2. The pump then claims due deliveries (pushing their due time a lease ahead, so a lost job is
   retried after it) and sends them, a batch per ``taskwarden.webhook`` Celery task.
3. :meth:`Sender.deliver` POSTs each one, concurrently, within ``timeout``. A 2xx answer is a
   delivery; anything else (redirects are not followed) is retried after a full-jitter backoff
   delay (``Retry-After`` when the receiver sends one), until ``max_attempts``. A refused URL
   (private address, no secret to sign with) is not retried. The outcome is recorded on the
   watch (``webhook_status``, ``webhook_error``, ``webhook_attempts``) and in its history.
   Registration already refuses a watch's own URL that spells a non-public address, by the
   same rules (:func:`refusal`); this check stays for names, whose DNS answer can change.

Delivery is at least once: a receiver may see a delivery twice (``X-Taskwarden-Delivery`` is
the same) and should be idempotent.

The signature (README "Webhooks"): ``X-Taskwarden-Signature: sha256=<hex>``, the HMAC-SHA256
with the secret as key of ``f"{timestamp}.".encode() + raw body``, where ``timestamp`` is the
``X-Taskwarden-Timestamp`` header (unix seconds, new on every attempt).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from taskwarden import logs, metrics, net
from taskwarden.config import Settings
from taskwarden.errors import TaskwardenError, UrlRefused
from taskwarden.lifecycle import RetryPolicy
from taskwarden.models import Watch
from taskwarden.store import Store

WATCH, GLOBAL = "watch", "global"  # a delivery's target: the watch's own URL, or the global one
ERROR_CHARS = 300
ALLOW_PRIVATE_SETTING = "TASKWARDEN_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES"

log = logs.get("taskwarden.webhooks")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Taskwarden-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, tolerance: float = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


@dataclass
class Delivery:
    """One final event to be sent to one target; kept as JSON in ``keys.WEBHOOKS_PENDING``."""

    id: str
    event_id: str
    watch_id: str
    target: str
    from_state: str
    to_state: str
    at: float
    attempts: int = 0

    def record(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_record(cls, raw: str) -> Delivery:
        return cls(**json.loads(raw))


# --- which URLs may be called (registration and worker side) -------------------------------


def url_policy(settings: Settings) -> net.Policy:
    """What webhook URLs may reach: private addresses only when
    ``TASKWARDEN_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES`` (unset: ``TASKWARDEN_HTTP__...``) says so."""
    allow = settings.webhooks.allow_private_addresses
    if allow is None:
        allow = settings.http.allow_private_addresses
    return net.Policy("webhooks", allow_private=allow, setting=ALLOW_PRIVATE_SETTING)


def refusal(settings: Settings, url: str) -> str | None:
    """Why a watch's webhook URL will be refused, judged now without DNS (at registration), or
    None. Only what the host spells is judged: an IP literal (in any form the resolver
    accepts, such as ``127.1``) or a ``localhost`` name (RFC 6761: always loopback). Any other
    name passes here, since its DNS answer may change; the send-time check
    (:class:`~taskwarden.providers.urls.Guard`) resolves it and checks every address."""
    policy = url_policy(settings)
    if policy.allow_private:
        return None
    host = net.origin(url)[1]
    address = _spelled_address(host)
    why = None if address is None else net.non_public(address)
    if address is None or why is None:
        return None
    return net.private_reason(policy, host, address, why)


def _spelled_address(host: str) -> net.IPAddress | None:
    """The address ``host`` stands for with no DNS: an IP literal, a legacy IPv4 spelling the
    resolver would accept (``127.1``, ``0x7f.0.0.1``, ``2130706433``), or a localhost name."""
    address = net.literal(host)
    if address is not None:
        return address
    if host == "localhost" or host.endswith(".localhost"):
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None  # a name: left to the send-time check


# --- sending (worker side) -----------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    ok: bool
    error: str | None = None
    retry: bool = True  # False: retrying cannot help (a refused URL, nothing to sign with)
    retry_after: float | None = None


class Sender:
    """Sends deliveries from one worker process: one HTTP client, on the runtime's loop."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        hooks = settings.webhooks
        self.policy: RetryPolicy = hooks.retry_policy()
        self.client = net.receiver_client(hooks.timeout, url_policy(settings))
        self.rng = random.Random()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, ids: Sequence[str]) -> metrics.Batch:
        """Send each delivery once, record each outcome; return the metrics of the batch."""
        seen = metrics.Batch()
        if not ids:
            return seen
        records = await asyncio.to_thread(self.store.deliveries, list(ids))
        deliveries = [Delivery.from_record(r) for r in records if r]
        watches = await asyncio.to_thread(self.store.get_many, [d.watch_id for d in deliveries])
        outcomes = await asyncio.gather(
            *(self._send(d, w) for d, w in zip(deliveries, watches, strict=True))
        )
        for delivery, watch, attempt in zip(deliveries, watches, outcomes, strict=True):
            outcome = await asyncio.to_thread(self._record, delivery, watch, attempt, time.time())
            seen.webhook(outcome)
        return seen

    async def _send(self, delivery: Delivery, watch: Watch | None) -> Attempt:
        hooks = self.settings.webhooks
        if watch is None:
            return Attempt(False, "the watch no longer exists", retry=False)
        url = watch.webhook if delivery.target == WATCH else hooks.url
        if not url:
            return Attempt(False, f"no {delivery.target} webhook URL is set any more", retry=False)
        if hooks.secret is None:
            return Attempt(
                False,
                "TASKWARDEN_WEBHOOKS__SECRET is not set: webhooks are only sent signed",
                retry=False,
            )
        body = payload(delivery, watch)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Taskwarden-Event": f"watch.{delivery.to_state}",
            "X-Taskwarden-Delivery": delivery.id,
            "X-Taskwarden-Timestamp": str(timestamp),
            "X-Taskwarden-Signature": sign(
                hooks.secret.get_secret_value().encode(), timestamp, body
            ),
        }
        try:
            async with asyncio.timeout(hooks.timeout):
                answer = await net.post(self.client, url, body, headers)
        except UrlRefused as exc:
            reason = str(exc).split(": ", 1)[-1]
            return Attempt(False, f"refused to call {_shown(url)}: {reason}", retry=False)
        except TimeoutError:
            return Attempt(False, f"no answer from {_shown(url)} within {hooks.timeout:g} s")
        except net.PostFailed as exc:
            return Attempt(False, f"{_shown(url)}: {exc}"[:ERROR_CHARS])
        except TaskwardenError as exc:
            return Attempt(False, f"{_shown(url)}: {type(exc).__name__}: {exc}"[:ERROR_CHARS])
        if answer.ok:
            return Attempt(True)
        why = f"{_shown(url)} answered {answer.status}"
        if answer.redirect:
            why += " (redirects are not followed)"
        return Attempt(
            False,
            f"{why}: {answer.text}" if answer.text else why,
            retry_after=_retry_after(answer.retry_after),
        )

    def _record(self, delivery: Delivery, watch: Watch | None, attempt: Attempt, now: float) -> str:
        """Write the outcome of one attempt; return it as the metric's outcome label."""
        delivery.attempts += 1
        n = delivery.attempts
        target = "webhook" if delivery.target == WATCH else "global webhook"
        next_at: float | None = None
        if attempt.ok:
            status, note = "delivered", f"{target} delivered (attempt {n})"
        elif not attempt.retry or self.policy.exhausted(n):
            status = "failed"
            note = f"{target} failed after {n} attempt{'s' if n > 1 else ''}: {attempt.error}"
        else:
            status = "retrying"
            retry_after = attempt.retry_after
            if retry_after is not None:
                retry_after = min(retry_after, self.policy.maximum_interval)
            delay = self.policy.delay(n, self.rng.random(), retry_after)
            next_at = now + delay
            note = f"{target} attempt {n} failed: {attempt.error}; next in {delay:.1f} s"
        # the watch's fields follow its own URL, or the global one when it has none
        on_watch = watch is not None and (delivery.target == WATCH or not watch.webhook)
        self.store.record_delivery(
            delivery.id,
            delivery.record(),
            delivery.watch_id,
            next_at=next_at,
            on_watch=on_watch,
            status=status,
            error=attempt.error,
            attempts=n,
            now=now,
            state=watch.state if watch is not None else None,
            note=note,
        )
        emit = {"retrying": log.warning, "failed": log.error}.get(status, log.info)
        emit(
            "webhook.attempt",
            watch_id=delivery.watch_id,
            delivery=delivery.id,
            target=delivery.target,
            attempt=n,
            status=status,
            error=attempt.error,
            next_in_s=None if next_at is None else round(next_at - now, 2),
        )
        return status


def payload(delivery: Delivery, watch: Watch) -> bytes:
    """The JSON body of a delivery: the event, and the watch as it is now."""
    body = {
        "type": f"watch.{delivery.to_state}",
        "delivery_id": delivery.id,
        "event_id": delivery.event_id,
        "occurred_at": delivery.at,
        "from": delivery.from_state or None,
        "to": delivery.to_state,
        "watch": watch.to_dict(),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the computed backoff will do


def _shown(url: str) -> str:
    """``url`` without its query or fragment, where receivers' tokens travel."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
