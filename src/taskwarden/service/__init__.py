"""What taskwarden does, as plain functions over its ports (the store, the providers, the
archive): registration, dispatch, polling, archiving and aborting. The Celery tasks in
:mod:`taskwarden.worker` and the API call these; nothing here knows Celery."""

from taskwarden.service.dispatching import DispatchResult, dispatch
from taskwarden.service.polling import Runtime, abort_remote, archive_watch, poll_batch
from taskwarden.service.registration import check_webhook, parse, register

__all__ = [
    "DispatchResult",
    "Runtime",
    "abort_remote",
    "archive_watch",
    "check_webhook",
    "dispatch",
    "parse",
    "poll_batch",
    "register",
]
