"""Every name shared across processes, defined once: Redis keys, Celery task and queue names."""

from __future__ import annotations

import json

PREFIX = "taskwarden:"

# Redis keys
WATCH = PREFIX + "watch:"  # hash per watch: WATCH + id
HISTORY = PREFIX + "history:"  # list per watch, newest first: HISTORY + id
DUE = PREFIX + "due:"  # sorted set per provider: DUE + provider, score = next check (unix s)
LEASES = PREFIX + "leases"  # sorted set: watch id -> lease expiry (unix s)
# sorted set per provider: watch id -> when dispatch claimed it for a check (unix s); left when
# the check commits, its lease is reaped, or the watch is cancelled or re-armed
IN_FLIGHT = PREFIX + "inflight:"
PROVIDERS = PREFIX + "providers"  # set of provider names that have watches
ALL = PREFIX + "watches"  # sorted set: watch id -> created at
BY_STATE = PREFIX + "state:"  # sorted set per state: id -> updated at
BY_PROVIDER = PREFIX + "provider:"  # sorted set per provider: id -> created at
UPDATED = PREFIX + "updated"  # sorted set: watch id -> updated at
LABEL = PREFIX + "label:"  # sorted set per label pair: id -> created at (labels never change)
# sorted set: final watch id -> when the retention sweep may remove it (unix s)
FINISHED = PREFIX + "finished"
COUNTS = PREFIX + "counts:"  # hash per provider: state -> number of watches in it
EVENTS = PREFIX + "events"  # stream: one entry per state transition, capped
HEARTBEAT = PREFIX + "heartbeat:"  # string per component (beat, dispatch) with a TTL
WORKER_HEARTBEAT = HEARTBEAT + "worker:"  # string per Celery worker node with a TTL
# string per Celery worker node, beside its heartbeat and with the same TTL: the queues it
# consumes (a JSON list). Not under WORKER_HEARTBEAT, whose keys hold bare times.
WORKER_QUEUES = HEARTBEAT + "queues:"
# sorted set: Celery worker node -> its last heartbeat (unix s). The registry of live workers,
# so that finding them never walks the keyspace; pruned of nodes whose heartbeat key expired.
WORKERS = HEARTBEAT + "workers"
SCHEMA = PREFIX + "schema"  # string: the index layout the watches were brought up to (backfill)
RUNNING = PREFIX + "running:"  # string per watch while an archive job runs: the run's token
RATE = PREFIX + "rate:"  # string per provider: the rate limiter's next free slot (µs)
DEADLETTERS = PREFIX + "deadletters"  # stream of refused registrations, capped
METRICS = PREFIX + "metrics"  # hash: counter and histogram cells, summed over every process
METRICS_RECENT = PREFIX + "metrics:recent:"  # hash per 10 s bucket (unix s), for recent rates
WEBHOOKS_DUE = PREFIX + "webhooks:due"  # sorted set: delivery id -> when to (re)try (unix s)
WEBHOOKS_PENDING = PREFIX + "webhooks:pending"  # hash: delivery id -> JSON (event, attempts)
CIRCUIT = PREFIX + "circuit:"  # hash per provider: its circuit breaker (taskwarden.circuit)
FAILING = PREFIX + "failing:"  # sorted set per provider: live watch id -> failing since
WEBHOOKS_GROUP = "taskwarden-webhooks"  # consumer group on the events stream


def watch(watch_id: str) -> str:
    return WATCH + watch_id


def history(watch_id: str) -> str:
    return HISTORY + watch_id


def due(provider: str) -> str:
    return DUE + provider


def by_state(state: str) -> str:
    return BY_STATE + state


def by_provider(provider: str) -> str:
    return BY_PROVIDER + provider


_PAIR = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # built once: cheaper


def label(key: str, value: str) -> str:
    # JSON, so that a '=' inside a key or value cannot make two pairs share a set
    return LABEL + _PAIR([key, value])


def in_flight(provider: str) -> str:
    return IN_FLIGHT + provider


def counts(provider: str) -> str:
    return COUNTS + provider


def circuit(provider: str) -> str:
    return CIRCUIT + provider


def failing(provider: str) -> str:
    return FAILING + provider


# kombu's Redis transport keeps a queue's messages of priority p > 0 in a list of their own
BROKER_PRIORITY_SEP = "\x06\x16"
BROKER_PRIORITIES = (3, 6, 9)


def broker_lists(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages (every priority)."""
    return [queue, *(f"{queue}{BROKER_PRIORITY_SEP}{p}" for p in BROKER_PRIORITIES)]


def metrics_recent(bucket: int) -> str:
    """The recent-rates hash of the 10-second bucket starting at ``bucket`` (unix s)."""
    return METRICS_RECENT + str(bucket)


# Celery task names: producers send these by name, with no import of this project.
TASK_TRACK = "taskwarden.track"
TASK_TRACK_MANY = "taskwarden.track_many"
TASK_DISPATCH = "taskwarden.dispatch"
TASK_POLL = "taskwarden.poll"
TASK_ARCHIVE = "taskwarden.archive"
TASK_ABORT = "taskwarden.abort"
TASK_WEBHOOK = "taskwarden.webhook"

# Queues. `celery` is Celery's default, where a producer that knows nothing of our routes sends.
QUEUE_DEFAULT = "celery"
QUEUE_DISPATCH = "taskwarden.dispatch"
QUEUE_POLL = "taskwarden.poll"
QUEUE_ARCHIVE = "taskwarden.archive"
QUEUE_WEBHOOK = "taskwarden.webhook"  # its own queue, so a backlog of polls cannot hold it up
# registrations and dispatch, consumed by a worker of their own (`taskwarden run`'s "control"),
# so that platforms that hang can hold up polls, never the intake nor the scheduling
CONTROL_QUEUES = (QUEUE_DEFAULT, QUEUE_DISPATCH)
POLL_QUEUES = (QUEUE_POLL, QUEUE_WEBHOOK)
ALL_QUEUES = (*CONTROL_QUEUES, *POLL_QUEUES, QUEUE_ARCHIVE)
