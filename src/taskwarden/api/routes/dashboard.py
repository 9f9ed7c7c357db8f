"""The dashboard: ``/`` and its files under ``/static/``, served from the ``taskwarden.web``
package; open, and left out of ``/openapi.json``."""

from __future__ import annotations

import importlib.resources
import mimetypes
import re

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
STATIC_TYPES = (".html", ".js", ".css", ".svg", ".png", ".ico", ".json", ".txt")
WEB_PACKAGE = "taskwarden.web"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def dashboard() -> Response:
    return _web_file("dashboard.html")


@router.get("/static/{name}")
def static(name: str) -> Response:
    if not STATIC_NAME.fullmatch(name) or not name.endswith(STATIC_TYPES):
        return Response("not found", status_code=404, media_type="text/plain")
    return _web_file(name)


def _web_file(name: str) -> Response:
    try:
        data = (importlib.resources.files(WEB_PACKAGE) / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, ModuleNotFoundError, NotADirectoryError):
        return Response("not found", status_code=404, media_type="text/plain")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})
