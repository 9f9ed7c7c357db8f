"""``/healthz`` (the process is up) and ``/readyz`` (everything a watch needs is reachable and
alive: :class:`~taskwarden.api.health.Readiness`). Both open, for orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from taskwarden.api import schemas
from taskwarden.api.deps import ContextDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=schemas.Health)
def healthz() -> dict[str, bool]:
    """The process is up."""
    return {"ok": True}


@router.get("/readyz", response_model=schemas.Readiness,
            responses={503: {"model": schemas.Readiness, "description": "Not ready"}})  # fmt: skip
def readyz(ctx: ContextDep, response: Response) -> dict[str, Any]:
    """Redis, broker and archive reachable; beat and workers alive; dispatch keeping up."""
    results = ctx.readiness.run()
    ready = all(ok for ok, _ in results.values())
    response.status_code = 200 if ready else 503
    checks = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()}
    return {"ready": ready, "checks": checks}
