"""What taskwarden does, as plain functions over its ports (the store, the providers, the
archive): registration (:mod:`.registration`), dispatch (:mod:`.dispatching`), polling
(:mod:`.polling`), archiving (:mod:`.archiving`), aborting (:mod:`.aborting`) and bulk actions
(:mod:`.bulk`), with the rules they share in :mod:`.rules`. Each takes the collaborators it
uses and a ``now``; what a worker process builds once to hand them over is its
:class:`Runtime` (:mod:`.runtime`). The Celery tasks in :mod:`taskwarden.worker` and the API
call these; nothing here knows Celery."""

from taskwarden.service.aborting import abort_remote
from taskwarden.service.archiving import archive_watch
from taskwarden.service.bulk import BulkResult, Selection
from taskwarden.service.dispatching import DispatchResult, dispatch, in_flight_cap
from taskwarden.service.polling import PollResult, poll_batch
from taskwarden.service.registration import (
    MAX_BATCH,
    Outcome,
    check_webhook,
    parse,
    register,
    register_many,
    tally,
)
from taskwarden.service.rules import Policies, Record, SendAbort, SendArchive
from taskwarden.service.runtime import Runtime

__all__ = [
    "MAX_BATCH",
    "BulkResult",
    "DispatchResult",
    "Outcome",
    "Policies",
    "PollResult",
    "Record",
    "Runtime",
    "Selection",
    "SendAbort",
    "SendArchive",
    "abort_remote",
    "archive_watch",
    "check_webhook",
    "dispatch",
    "in_flight_cap",
    "parse",
    "poll_batch",
    "register",
    "register_many",
    "tally",
]
