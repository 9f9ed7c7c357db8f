"""The HTTP API (FastAPI): ``create_app(settings, redis_url)``; ``taskwarden api`` serves it.

:mod:`.app` assembles it; :mod:`.deps` holds what the routes share (the store, the settings,
the bearer-token checks); :mod:`.routes` has one router per concern (watches, stats, events,
health, metrics, the dashboard); :mod:`.schemas` the shapes it documents and sends.
"""

from taskwarden.api.app import create_app

__all__ = ["create_app"]
