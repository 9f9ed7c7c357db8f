"""The Celery side: the app, its configuration and signals (:mod:`.app`), its thin tasks
(:mod:`.tasks`), the broker transport (:mod:`.broker`), the consumer that dead-letters what
Celery cannot run (:mod:`.consumer`) and the worker heartbeat (:mod:`.heartbeat`)."""

from taskwarden.worker.app import create_app

__all__ = ["create_app"]
