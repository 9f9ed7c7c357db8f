"""Every name shared across processes, defined once: Redis keys, Celery task and queue names."""

from __future__ import annotations

PREFIX = "taskwarden:"

# Redis keys
WATCH = PREFIX + "watch:"  # hash per watch: WATCH + id
HISTORY = PREFIX + "history:"  # list per watch, newest first: HISTORY + id
DUE = PREFIX + "due:"  # sorted set per provider: DUE + provider, score = next check (unix s)
LEASES = PREFIX + "leases"  # sorted set: watch id -> lease expiry (unix s)
PROVIDERS = PREFIX + "providers"  # set of provider names that have watches
ALL = PREFIX + "watches"  # sorted set: watch id -> created at
BY_STATE = PREFIX + "state:"  # sorted set per state: id -> updated at
BY_PROVIDER = PREFIX + "provider:"  # sorted set per provider: id -> created at
HEARTBEAT = PREFIX + "heartbeat:"  # string per component (beat, dispatch) with a TTL
RUNNING = PREFIX + "running:"  # string per watch while an archive job runs: the run's token
RATE = PREFIX + "rate:"  # string per provider: the rate limiter's next free slot (µs)
DEADLETTERS = PREFIX + "deadletters"  # stream of refused registrations, capped


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


# Celery task names: producers send these by name, with no import of this project.
TASK_TRACK = "taskwarden.track"
TASK_DISPATCH = "taskwarden.dispatch"
TASK_POLL = "taskwarden.poll"
TASK_ARCHIVE = "taskwarden.archive"
TASK_ABORT = "taskwarden.abort"

# Queues. `celery` is Celery's default, where a producer that knows nothing of our routes sends.
QUEUE_DEFAULT = "celery"
QUEUE_DISPATCH = "taskwarden.dispatch"
QUEUE_POLL = "taskwarden.poll"
QUEUE_ARCHIVE = "taskwarden.archive"
POLL_QUEUES = (QUEUE_DEFAULT, QUEUE_DISPATCH, QUEUE_POLL)
ALL_QUEUES = (*POLL_QUEUES, QUEUE_ARCHIVE)
