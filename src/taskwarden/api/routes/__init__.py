"""The API's routers, one per concern; :func:`~taskwarden.api.app.create_app` includes them in
this order (the order of ``/openapi.json``'s paths)."""

from taskwarden.api.routes import dashboard, events, health, metrics, stats, watches

ROUTERS = (
    watches.router,
    stats.router,
    events.router,
    health.router,
    metrics.router,
    dashboard.router,
)

__all__ = ["ROUTERS"]
