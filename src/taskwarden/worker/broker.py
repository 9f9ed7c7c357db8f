"""Celery's Redis transport, with a fetch that a killed worker cannot lose.

Stock kombu takes a message off its queue with ``BRPOP`` and only afterwards, once the worker's
main process has read the reply and built the message, records it as unacknowledged (the
``unacked`` hash that ``visibility_timeout`` restores from). In between, the message exists only
in a socket buffer: a main process killed there (SIGKILL, the OOM killer, a lost host) loses it
for good. An idle worker keeps a ``BRPOP`` pending at all times, so the window opens whenever a
message arrives, and it stays open while the main process is busy elsewhere.
``tests/test_broker.py`` shows a stock worker losing a message that way, every time.

Here the fetch is one Lua script: ``RPOP`` from the first non-empty queue (kombu's priority and
queue order) together with the ``HSET unacked`` and ``ZADD unacked_index`` that kombu would do
later, in the same layout, so everything downstream (acks, rejects, ``restore_visible``,
``restore_unacked`` at shutdown) is kombu's own code. A killed worker's message is then either
still queued or recorded as unacknowledged and restored after the visibility timeout.

A script cannot block, so an idle channel does not spin: after a fetch finds every queue empty,
it waits with ``BLMOVE q q RIGHT RIGHT <idle_wait>`` on the first queue, which blocks like
``BRPOP`` but moves the element onto the same end of the same list (it takes nothing), then
fetches again. A message on that first queue wakes the worker at once; one on another queue
waits for the timeout, which Redis rounds up to its ``hz`` tick (100 ms at the default
``hz 10``). A busy worker never waits: it fetches again as soon as it has room.

A Redis out of memory (``maxmemory`` reached under ``noeviction``) refuses the fetch script and
the idle wait (both may write); stock kombu would stop the worker on that ``OutOfMemoryError``.
Here the channel logs a warning and sends nothing for a pause that doubles from
``OOM_PAUSE_MIN`` to ``OOM_PAUSE_MAX`` seconds, then tries again, as it waits out a Redis that is
down; the first fetch that succeeds ends the pause.

Producers are unchanged (kombu's ``LPUSH``), so any Celery client still sends to taskwarden. What
is not a Celery message at all (any text pushed onto a queue) is dead-lettered, where stock kombu
stops the worker.
Needs Redis 6.2 or later (``BLMOVE``); :func:`taskwarden.redis_server.check_redis` checks. This
subclasses private methods of kombu's Redis channel, so ``pyproject.toml`` pins kombu's minor
version and the tests run it against a real worker. Selected by Celery's ``broker_transport``
setting (:func:`taskwarden.worker.create_app`).
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import OutOfMemoryError

from taskwarden import logs
from taskwarden.store import dead_letter

log = logs.get("taskwarden.broker")

# KEYS: unacked hash, unacked index, then the queue keys in order; ARGV: the time of the fetch.
# Returns false, or {queue key, message, 1 if recorded}. An item that is no kombu envelope (no
# string delivery tag) is handed over unrecorded, to be dead-lettered (Channel._readable).
FETCH = """
for i = 3, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, message = pcall(cjson.decode, item)
    local props = ok and type(message) == 'table' and message['properties']
    local tag = type(props) == 'table' and props['delivery_tag']
    if type(tag) ~= 'string' then
      return {KEYS[i], item, 0}
    end
    local info = props['delivery_info']
    local exchange, routing_key = '', ''
    if type(info) == 'table' then
      if type(info['exchange']) == 'string' then exchange = info['exchange'] end
      if type(info['routing_key']) == 'string' then routing_key = info['routing_key'] end
    end
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[1], tag,
      '[' .. item .. ',' .. cjson.encode(exchange) .. ',' .. cjson.encode(routing_key) .. ']')
    return {KEYS[i], item, 1}
  end
end
return false
"""

IDLE_WAIT = 0.1  # seconds an idle channel blocks before it fetches again
OOM_PAUSE_MIN = 0.5  # seconds a channel waits after Redis refused a fetch for want of memory
OOM_PAUSE_MAX = 10.0


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, minus the unacked record that :data:`FETCH` already wrote."""

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag == self.channel.fetched_tag:
            self.channel.fetched_tag = None
            virtual.QoS.append(self, message, delivery_tag)  # the local bookkeeping only
        else:  # not from our fetch (a fanout message, say): kombu's own way
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel whose fetch records the message as unacked atomically."""

    QoS = QoS
    idle_wait = IDLE_WAIT
    #: the delivery tag :data:`FETCH` recorded for the message being delivered now
    fetched_tag: str | None = None
    _idle = False  # the last fetch found every queue empty
    _waiting = False  # the command in flight is the idle wait, not a fetch
    _hot: str | None = None  # the queue key the last message came from: the idle wait's key
    _paused_until = 0.0  # monotonic time before which nothing is fetched (Redis out of memory)
    _oom_refusals = 0  # fetches Redis refused for want of memory, in a row

    def _out_of_memory(self, exc: OutOfMemoryError) -> None:
        """Redis refused a fetch for want of memory: wait, doubling, as for an outage."""
        self._oom_refusals += 1
        pause = min(OOM_PAUSE_MAX, OOM_PAUSE_MIN * 2 ** min(self._oom_refusals - 1, 10))
        self._paused_until = time.monotonic() + pause
        log.warning(
            "broker.out_of_memory", error=str(exc), refusals=self._oom_refusals, retry_in=pause
        )

    def _fetched(self) -> None:
        if self._oom_refusals:
            log.info("broker.memory_back", refusals=self._oom_refusals)
            self._oom_refusals = 0

    def _fetch_args(self, keys: list[str]) -> list[Any]:
        return ["EVAL", FETCH, 2 + len(keys), self.unacked_key, self.unacked_index_key, *keys,
                time.time()]  # fmt: skip

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._oom_refusals and time.monotonic() < self._paused_until:
            return  # nothing in flight: the event loop asks again on its next tick
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        self._waiting = self._idle
        if self._waiting:
            # the queue that fed us last is the likeliest to feed us next (kombu's cycle has
            # just moved it to the back, so keys[0] would be the least likely)
            key = self._hot if self._hot in keys else keys[0]
            args: list[Any] = ["BLMOVE", key, key, "RIGHT", "RIGHT", self.idle_wait]
        else:
            args = self._fetch_args(keys)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]  # kombu: None
        self.client.connection.send_command(*args)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            command = "BLMOVE" if self._waiting else "EVAL"
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            except OutOfMemoryError as exc:
                self._out_of_memory(exc)
                self._idle = False
                raise virtual.Empty() from None
            except self.connection_errors:
                # disconnect so the next round reconnects (as kombu does); fetch first then
                self.client.connection.disconnect()
                self._idle = False
                raise
            self._fetched()
            if self._waiting or not reply:
                # after a wait, fetch; after an empty fetch, wait
                self._idle = not self._waiting
                raise virtual.Empty()
            self._idle = False
            key, item, recorded = reply
            self._hot = bytes_to_str(key)
            queue = self._hot.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            payload = self._readable(item, queue, bool(recorded))
            if payload is None:
                raise virtual.Empty()
            self._deliver_fetched(payload, queue, bool(recorded))
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu's own reset
            self._flush_brpop_reauth()  # as kombu does once the reply is consumed

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """The synchronous fetch (``basic_get``), atomic in the same way."""
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps]
        if self._oom_refusals and time.monotonic() < self._paused_until:
            raise virtual.Empty()
        try:
            with self.conn_or_acquire() as client:
                reply = client.execute_command(*self._fetch_args(keys))
        except OutOfMemoryError as exc:
            self._out_of_memory(exc)
            raise virtual.Empty() from None
        self._fetched()
        if not reply:
            raise virtual.Empty()
        _, item, recorded = reply
        payload = self._readable(item, queue, bool(recorded))
        if payload is None:
            raise virtual.Empty()
        self.fetched_tag = _tag(payload) if recorded else None
        return payload

    def _readable(self, item: bytes, queue: str, recorded: bool) -> dict[str, Any] | None:
        """The message, or None once an item kombu cannot read is dead-lettered.

        Something other than a kombu envelope in a queue (a raw ``LPUSH`` of any text, an
        envelope whose body cannot be decoded) makes stock kombu raise in the worker's event
        loop, which stops the worker ("Unrecoverable error"), item lost. Here it goes to the
        dead-letter stream (``taskwarden deadletters``) with the reason, and the worker goes on.
        """
        try:
            payload = loads(bytes_to_str(item))
            if not isinstance(payload, dict):
                raise TypeError(f"a JSON {type(payload).__name__}, not an object")
            self.Message(payload, channel=self)  # what kombu builds on delivery: fails alike
        except Exception as exc:
            reason = (
                f"unreadable message on queue {queue!r}, not a Celery message: "
                f"{type(exc).__name__}: {exc}"
            )
            log.warning("message.dead_lettered", queue=queue, reason=reason)
            text = item.decode("utf-8", errors="replace")
            with self.conn_or_acquire() as client:
                pipe = client.pipeline()  # MULTI: the dead letter replaces the unacked record
                dead_letter(pipe, time.time(), "queue", reason, text)
                if recorded and isinstance(payload := _json_or_none(item), dict):
                    self.qos._remove_from_indices(_tag(payload), pipe)
                pipe.execute()
            return None
        return payload

    def _deliver_fetched(self, payload: dict[str, Any], queue: str, recorded: bool) -> None:
        # kombu builds the message (which _readable has shown it can) and hands it to the QoS
        # before the consumer sees it; QoS.append clears the tag
        self.fetched_tag = _tag(payload) if recorded else None
        try:
            self.connection._deliver(payload, queue)
        finally:
            self.fetched_tag = None


def _tag(payload: dict[str, Any]) -> str:
    return str(payload["properties"]["delivery_tag"])


def _json_or_none(item: bytes) -> Any:
    try:
        return loads(bytes_to_str(item))
    except ValueError:
        return None


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`: ``broker_transport`` names this class."""

    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """:class:`Channel`'s atomic fetch on a master found through Redis Sentinel: kombu's
    sentinel channel only changes how connections are made (its pool asks the sentinels for the
    master, again after a failover), and the fetch only how messages are taken, so the two
    compose by inheritance."""


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's sentinel transport with :class:`SentinelChannel`."""

    Channel = SentinelChannel


class NoSwitch:
    """Celery's ``broker_failover_strategy`` for Sentinel: kombu never switches broker URLs.

    kombu's failover walks the broker's ``;``-separated URLs on connection errors, and each
    switch reads the transport from the URL's scheme again (``Connection.switch``), which would
    swap :class:`SentinelTransport` for the stock ``sentinel`` one (and its losing fetch) after
    the first failover. With Sentinel the URLs are the sentinels, which redis-py already asks in
    turn for the master on every connection, so there is nothing to walk: kombu asks this
    "cycle" whether to switch (its truth) and it says no.
    """

    def __init__(self, alternates: list[str]) -> None:
        self.first = alternates[0]

    def __iter__(self) -> NoSwitch:
        return self

    def __next__(self) -> str:
        return self.first

    def __bool__(self) -> bool:
        return False
