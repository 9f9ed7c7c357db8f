"""The HTTP API's bearer token: from ``TASKWARDEN_API__TOKEN``, or generated once into
``<data_dir>/api-token`` (mode 0600) so that the server and a client on the same machine agree
without configuration. Kept apart from :mod:`taskwarden.api` so a client need not import FastAPI.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from taskwarden.config import Settings

FILE_NAME = "api-token"


def path(settings: Settings) -> Path:
    return settings.data_dir / FILE_NAME


def load(settings: Settings) -> str | None:
    """The token a client should send: the setting, else the file's; None if neither exists."""
    if settings.api.token is not None:
        return settings.api.token.get_secret_value()
    try:
        return _read(path(settings))
    except FileNotFoundError:
        return None


def load_or_create(settings: Settings) -> str:
    """The token to send or expect; creates the token file if neither it nor the setting exists."""
    if settings.api.token is not None:
        return settings.api.token.get_secret_value()
    file = path(settings)
    try:
        return _read(file)
    except FileNotFoundError:
        pass
    file.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # written whole under a private name, then linked into place: a reader never sees it half
    # written, and of two processes starting at once, one token wins
    tmp = file.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        try:
            os.link(tmp, file)
        except FileExistsError:
            return _read(file)
    finally:
        tmp.unlink()
    return token


def _read(file: Path) -> str:
    token = file.read_text().strip()
    if not token:
        raise ValueError(f"{file} is empty; delete it to have a new token generated")
    return token
