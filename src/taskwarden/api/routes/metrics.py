"""``GET /metrics``: Prometheus text, summed over every worker process
(:mod:`taskwarden.metrics`), from what the store holds."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from taskwarden.api import schemas
from taskwarden.api.deps import READS, StoreDep
from taskwarden.api.schemas import errors
from taskwarden.metrics import exposition

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics", dependencies=READS, response_class=Response,
    responses={200: {"description": "Prometheus text format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}},
               **errors(401), 503: {"model": schemas.Error, "description": "Unavailable"}},
)  # fmt: skip
def metrics(store: StoreDep) -> Response:
    """Prometheus metrics, summed over every worker process."""
    body, content_type = exposition(store.metric_cells(), store.live_figures(time.time()))
    return Response(body, media_type=content_type)
