"""Webhooks: signed as the README documents, retried with backoff, failures shown on the watch."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from taskwarden import keys
from taskwarden.api import create_app
from taskwarden.config.settings import load_settings
from taskwarden.errors import ConfigError, InvalidRegistration
from taskwarden.lifecycle import State
from taskwarden.models import Registration, Watch, watch_id
from taskwarden.service import registration
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store
from taskwarden.webhooks import outbox as webhooks_pump
from taskwarden.webhooks import sender as webhooks

from .conftest import Warden, running_warden, wait_for
from .test_api import AUTH, TOKEN, serve
from .test_metrics import scrape

SECRET = "test-webhook-secret"


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the README, not from taskwarden's code."""
    timestamp = headers["X-Taskwarden-Timestamp"]
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(expected, headers["X-Taskwarden-Signature"])


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool


@dataclass
class Receiver:
    """A webhook receiver on loopback: ``/flaky/<n>`` fails its first n calls with 500,
    ``/down`` always does, anything else answers 204."""

    secret: str
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def for_path(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(SECRET)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items()}
            call = Call(self.path, headers, body, time.monotonic(), verify(SECRET, headers, body))
            with rec.lock:
                rec.calls.append(call)
                seen = sum(1 for c in rec.calls if c.path == self.path)
            path = self.path.split("?", 1)[0]
            failing = path == "/down"
            if path.startswith("/flaky/"):
                failing = seen <= int(path.rsplit("/", 1)[1])
            self.send_response(500 if failing else 204)
            if failing:
                self.send_header("Content-Length", "12")
                self.end_headers()
                self.wfile.write(b"receiver sad")
            else:
                self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def webhook_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "TASKWARDEN_WEBHOOKS__SECRET": SECRET,
        "TASKWARDEN_WEBHOOKS__INITIAL_INTERVAL": "0.4",
        "TASKWARDEN_WEBHOOKS__MAXIMUM_INTERVAL": "1",
        "TASKWARDEN_WEBHOOKS__MAX_ATTEMPTS": "3",
        "TASKWARDEN_WEBHOOKS__TIMEOUT": "5",
        # the receiver is on loopback, which webhooks refuse unless told otherwise
        "TASKWARDEN_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES": "true",
        **extra,
    }


def deliveries_counted(w: Warden, outcome: str) -> float:
    """``taskwarden_webhook_deliveries_total{outcome=...}`` as a scrape reports it."""
    samples, _ = scrape(w.store)
    return samples.get(("taskwarden_webhook_deliveries_total", (("outcome", outcome),)), 0.0)


def webhook_ends(w: Warden, wid: str, status: str) -> Watch:
    """The watch, once its webhook delivery reached ``status`` (within a minute)."""

    def reached() -> Watch | None:
        watch = w.store.get(wid)
        return watch if watch is not None and watch.webhook_status == status else None

    return wait_for(reached, timeout=60)


def notes(w: Warden, wid: str) -> list[str]:
    return [h["note"] or "" for h in w.store.history(wid)]


def test_flaky_receiver_gets_a_signed_delivery_after_retries(
    tmp_path: Path, sim: SimulatorServer, receiver: Receiver
) -> None:
    """A watch's own webhook, failing twice with 500, is retried with a backoff and delivered
    on the third attempt; every attempt carries a valid signature and the same delivery id;
    the body is the final watch; the watch says delivered after 3 attempts."""
    task = sim.geobox.add_task(running_seconds=0.3, file_size=10)
    hook = f"{receiver.url}/flaky/2?token=abc"
    with running_warden(tmp_path, sim, **webhook_env(receiver)) as w:
        w.send_track(provider="geobox", remote_id=task.uuid, webhook=hook)
        wid = watch_id("geobox", task.uuid)
        assert w.wait_final(wid).state is State.SUCCEEDED
        watch = webhook_ends(w, wid, "delivered")
        history = notes(w, wid)
        counted = wait_for(lambda: deliveries_counted(w, "delivered"), timeout=30)
        assert counted == 1
        assert deliveries_counted(w, "retrying") == 2
    calls = receiver.for_path("/flaky/2?token=abc")
    assert len(calls) == 3
    assert all(c.verified for c in calls)
    assert len({c.headers["X-Taskwarden-Delivery"] for c in calls}) == 1
    assert {c.headers["X-Taskwarden-Event"] for c in calls} == {"watch.succeeded"}
    body = json.loads(calls[-1].body)
    assert body["type"] == "watch.succeeded"
    assert body["to"] == "succeeded"
    assert body["watch"]["id"] == wid
    assert body["watch"]["state"] == "succeeded"
    assert body["watch"]["outputs"]  # archived before the final state, so it is all there
    assert watch.webhook_attempts == 3
    assert watch.webhook_error is None
    assert sum("webhook attempt" in n and "failed" in n for n in history) == 2
    assert any("webhook delivered (attempt 3)" in n for n in history)
    # the token in the URL's query is never written to the history
    assert not any("token=abc" in n for n in history)


def test_receiver_that_always_fails_marks_the_watch_failed(
    tmp_path: Path, sim: SimulatorServer, receiver: Receiver
) -> None:
    """The global webhook, whose receiver always answers 500, is tried max_attempts times;
    then the watch shows webhook_status=failed with the receiver's answer, and a watch's
    failed remote task (not only a success) is what triggered it."""
    task = sim.geobox.add_task(running_seconds=0.2, outcome="failure")
    env = webhook_env(receiver, TASKWARDEN_WEBHOOKS__URL=f"{receiver.url}/down")
    with running_warden(tmp_path, sim, **env) as w:
        w.send_track(provider="geobox", remote_id=task.uuid)
        wid = watch_id("geobox", task.uuid)
        assert w.wait_final(wid).state is State.FAILED
        watch = webhook_ends(w, wid, "failed")
        time.sleep(2)  # no attempt after giving up
        assert w.store.redis.zcard(keys.WEBHOOKS_DUE) == 0
        history = notes(w, wid)
    calls = receiver.for_path("/down")
    assert len(calls) == 3
    assert all(c.verified for c in calls)
    assert json.loads(calls[0].body)["type"] == "watch.failed"
    assert watch.webhook_attempts == 3
    assert watch.webhook_error is not None
    assert "answered 500" in watch.webhook_error and "receiver sad" in watch.webhook_error
    assert any("global webhook failed after 3 attempts" in n for n in history)
    # the backoff spaced the attempts out (full jitter: each gap is somewhere in 0..ceiling)
    assert calls[-1].at - calls[0].at < 30


def test_a_final_watch_is_delivered_once_on_the_state_its_archive_lands_on(
    tmp_path: Path, sim: SimulatorServer, receiver: Receiver
) -> None:
    """An archive="final" watch whose task fails passes through archiving: the webhook goes
    once, as watch.failed, with the watch as it ended (failed, its outcome, its archive mode),
    and nothing is sent for the archiving step."""
    task = sim.geobox.add_task(running_seconds=0.2, outcome="failure")
    with running_warden(tmp_path, sim, **webhook_env(receiver)) as w:
        w.send_track(provider="geobox", remote_id=task.uuid, archive="final",
                     webhook=f"{receiver.url}/final")  # fmt: skip
        wid = watch_id("geobox", task.uuid)
        assert w.wait_final(wid).state is State.FAILED
        webhook_ends(w, wid, "delivered")
        assert [h["to"] for h in w.store.history(wid) if h["from"] != h["to"]][-2:] == [
            "archiving", "failed"
        ]  # fmt: skip
    calls = receiver.for_path("/final")
    assert len(calls) == 1 and calls[0].verified
    body = json.loads(calls[0].body)
    assert (body["type"], body["from"], body["to"]) == ("watch.failed", "archiving", "failed")
    assert (body["watch"]["state"], body["watch"]["outcome"], body["watch"]["archive"]) == (
        "failed", "failed", "final"
    )  # fmt: skip


def test_loopback_receiver_is_refused_unless_allowed(store: Store, receiver: Receiver) -> None:
    """A webhook URL on loopback is refused before any request, not retried, and the watch
    says why and which setting allows it."""
    settings = load_settings(
        webhooks={"secret": SECRET, "max_attempts": 5},
        http={"allow_private_addresses": False},
    )
    reg = Registration(provider="geobox", remote_id=str(uuid.uuid4()), webhook=receiver.url)
    watch, _ = store.register(reg, time.time())
    delivery = webhooks.Delivery(
        id="1-0:watch",
        event_id="1-0",
        watch_id=watch.id,
        target=webhooks.WATCH,
        from_state="running",
        to_state="succeeded",
        at=time.time(),
    )
    store.add_deliveries(0, [(delivery.id, delivery.record())])
    sender = webhooks.Sender(settings, store)

    async def go() -> None:
        await sender.deliver([delivery.id])
        await sender.aclose()

    asyncio.run(go())
    after = store.get(watch.id)
    assert after is not None
    assert after.webhook_status == "failed"
    assert after.webhook_attempts == 1
    assert after.webhook_error is not None
    assert "loopback" in after.webhook_error
    assert "TASKWARDEN_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES" in after.webhook_error
    assert receiver.calls == []
    assert store.redis.zcard(keys.WEBHOOKS_DUE) == 0
    assert store.redis.hlen(keys.WEBHOOKS_PENDING) == 0


def test_final_events_become_one_delivery_each_even_when_read_twice(store: Store) -> None:
    """The dispatch pump turns a final event into one delivery per target, leases it while it
    is being sent, and a replay of the stream (a crash before the ack) adds nothing twice."""
    settings = load_settings(webhooks={"secret": SECRET, "url": "https://example.com/all"})
    sent: list[str] = []
    now = time.time()
    assert webhooks_pump.pump(store, settings, now, sent.extend) == 0  # creates the group
    reg = Registration(
        provider="geobox", remote_id=str(uuid.uuid4()), webhook="https://example.com/own"
    )
    watch, _ = store.register(reg, now)
    plain, _ = store.register(Registration(provider="geobox", remote_id=str(uuid.uuid4())), now)
    assert webhooks_pump.pump(store, settings, now, sent.extend) == 0  # registered: not final
    store.cancel(watch.id, now)
    store.cancel(plain.id, now)
    assert webhooks_pump.pump(store, settings, now + 1, sent.extend) == 3
    targets = sorted(i.rsplit(":", 1)[1] for i in sent)
    assert targets == ["global", "global", "watch"]  # the plain watch only has the global one
    assert webhooks_pump.pump(store, settings, now + 2, sent.extend) == 0  # leased
    store.redis.xgroup_setid(keys.EVENTS, keys.WEBHOOKS_GROUP, id="0")  # replay everything
    assert webhooks_pump.pump(store, settings, now + 3, sent.extend) == 0
    assert store.redis.hlen(keys.WEBHOOKS_PENDING) == 3
    lease = webhooks_pump.lease_seconds(settings)
    assert webhooks_pump.pump(store, settings, now + 2 + lease, sent.extend) == 3  # lease over


@pytest.mark.parametrize(
    ("webhook", "reason"),
    [
        ("ftp://example.com/hook", "must be an http(s) URL"),
        ("https:///nohost", "must be an http(s) URL"),
        ("https://user:pw@example.com/hook", "must not carry credentials"),
    ],
)
def test_bad_webhook_urls_are_refused_at_registration(webhook: str, reason: str) -> None:
    """A registration's webhook must be a plain http(s) URL."""
    with pytest.raises(InvalidRegistration, match=re.escape(reason)):
        registration.parse({"provider": "geobox", "remote_id": "t-1", "webhook": webhook})


def test_global_url_without_a_secret_is_refused() -> None:
    """Webhooks are always signed: a global URL with no secret stops the warden at start."""
    with pytest.raises(ConfigError, match="TASKWARDEN_WEBHOOKS__SECRET"):
        load_settings(webhooks={"url": "https://example.com/hook"})


def test_signature_is_hmac_of_timestamp_dot_body() -> None:
    """The documented algorithm, and a receiver's check: tampering or staleness fails it."""
    body = b'{"type":"watch.succeeded"}'
    now = int(time.time())
    signature = webhooks.sign(b"k", now, body)
    expected = hmac.new(b"k", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature == "sha256=" + expected
    assert webhooks.verify(b"k", str(now), body, signature)
    assert not webhooks.verify(b"k", str(now), body + b" ", signature)
    assert not webhooks.verify(b"other", str(now), body, signature)
    assert not webhooks.verify(b"k", str(now - 3600), body, webhooks.sign(b"k", now - 3600, body))


# refused at registration: the send-time address rules and allow setting, without DNS

STRICT = {"webhooks": {"secret": SECRET}, "http": {"allow_private_addresses": False}}


@pytest.mark.parametrize(
    ("webhook", "why"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
        ("http://[::1]/hook", "::1 is a loopback address"),
        ("http://localhost:9000/hook", "localhost (127.0.0.1) is a loopback address"),
        ("http://api.LOCALHOST./hook", "api.localhost (127.0.0.1) is a loopback address"),
        ("http://127.1/hook", "127.1 (127.0.0.1) is a loopback address"),  # getaddrinfo reads it so
        ("http://2130706433/hook", "2130706433 (127.0.0.1) is a loopback address"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://169.254.169.254/latest", "169.254.169.254 is the cloud metadata address"),
        ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
        ("http://[::ffff:192.168.0.7]/hook", "is a private address (as 192.168.0.7)"),
        ("http://0.0.0.0/hook", "0.0.0.0 is an unspecified address"),
    ],
)
def test_webhook_on_a_private_address_is_refused_at_registration(
    store: Store, webhook: str, why: str
) -> None:
    """A webhook URL that spells a non-public address is refused when registered, with the
    send-time check's reason and the setting that allows it, and dead-lettered; no watch."""
    settings = load_settings(**STRICT)
    data = {"provider": "geobox", "remote_id": str(uuid.uuid4()), "webhook": webhook}
    with pytest.raises(InvalidRegistration) as caught:
        registration.register(store, settings, data, source="api")
    reason = str(caught.value)
    assert reason.startswith("invalid registration: webhook: ")
    assert why in reason
    assert "set TASKWARDEN_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES=true to allow it" in reason
    letter = store.dead_letters(1)[0]
    assert (letter["source"], letter["reason"]) == ("api", reason)
    assert store.get(watch_id("geobox", data["remote_id"])) is None


@pytest.mark.parametrize(
    "webhook",
    [
        "https://hooks.example.com/taskwarden",  # a name: its DNS answer is judged when sent
        "http://93.184.216.34:8443/hook",
        "https://[2606:4700::1111]/hook",
        "http://localhost.example.com/hook",  # only localhost itself and its subdomains
    ],
)
def test_webhook_on_a_public_address_or_a_name_is_accepted(store: Store, webhook: str) -> None:
    """Public literals, and host names (which need DNS, so the send-time check judges them),
    pass registration."""
    settings = load_settings(**STRICT)
    data = {"provider": "geobox", "remote_id": str(uuid.uuid4()), "webhook": webhook}
    watch, created = registration.register(store, settings, data, source="api")
    assert created and watch.webhook == webhook


@pytest.mark.parametrize(
    ("hooks_allow", "http_allow", "accepted"),
    [
        (True, False, True),
        (None, True, True),  # unset: the global TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES
        (None, False, False),
        (False, True, False),  # the webhooks' own setting wins
    ],
)
def test_registration_follows_the_send_time_allow_setting(
    store: Store, receiver: Receiver, hooks_allow: bool | None, http_allow: bool, accepted: bool
) -> None:
    """Registration allows a loopback receiver exactly when the sender would call it: the same
    setting decides both."""
    settings = load_settings(
        webhooks={"secret": SECRET, "allow_private_addresses": hooks_allow},
        http={"allow_private_addresses": http_allow},
    )
    assert webhooks.url_policy(settings).allow_private is accepted
    data = {"provider": "geobox", "remote_id": str(uuid.uuid4()), "webhook": receiver.url}
    if accepted:
        watch, created = registration.register(store, settings, data, source="cli")
        assert created and watch.webhook == receiver.url
    else:
        with pytest.raises(InvalidRegistration, match="is a loopback address"):
            registration.register(store, settings, data, source="cli")


def test_api_answers_422_for_a_private_webhook(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    """Through the HTTP API, a loopback webhook is a 422 with the reason; allowed, a 201."""

    def app(allow: bool) -> Any:
        settings = load_settings(
            data_dir=tmp_path, archive_url=(tmp_path / "archive").as_uri(), api={"token": TOKEN},
            webhooks={"secret": SECRET, "allow_private_addresses": allow},
        )  # fmt: skip
        return create_app(settings, redis_url)

    body = {"provider": "geobox", "remote_id": str(uuid.uuid4()), "webhook": "http://[::1]/h"}
    with serve(app(False)) as client:
        refused = client.post("/v1/watches", json=body, headers=AUTH)
    assert refused.status_code == 422
    assert "::1 is a loopback address" in refused.json()["detail"]
    assert store.dead_letters(1)[0]["source"] == "api"
    with serve(app(True)) as client:
        assert client.post("/v1/watches", json=body, headers=AUTH).status_code == 201


@pytest.mark.slow
def test_queue_registration_with_a_private_webhook_is_dead_lettered(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """A registration message whose webhook is on loopback is refused by the worker and
    dead-lettered (source queue) with the reason; no watch is created."""
    env = {"TASKWARDEN_WEBHOOKS__SECRET": SECRET,
           "TASKWARDEN_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES": "false"}  # fmt: skip
    with running_warden(tmp_path, sim, **env) as w:
        remote_id = str(uuid.uuid4())
        w.send_track(provider="geobox", remote_id=remote_id, webhook="http://127.0.0.1:9/hook")
        letter = w.dead_letter(remote_id)
        assert letter["source"] == "queue"
        assert "webhook: 127.0.0.1 is a loopback address" in letter["reason"]
        assert w.store.get(watch_id("geobox", remote_id)) is None
