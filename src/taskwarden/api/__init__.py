"""The HTTP API (FastAPI): ``create_app(settings, redis_url)``; ``taskwarden api`` serves it."""

from taskwarden.api.app import create_app

__all__ = ["create_app"]
