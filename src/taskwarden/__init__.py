"""taskwarden: watch long-running remote tasks until they finish, then archive their outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskwarden.version import __version__

__all__ = ["ApiError", "Client", "NotFound", "Unauthorized", "WaitTimeout", "__version__"]

if TYPE_CHECKING:
    from taskwarden.client import ApiError, Client, NotFound, Unauthorized, WaitTimeout


def __getattr__(name: str) -> Any:
    # the client (and httpx) load on first use: workers and the CLI never pay for them
    if name in __all__ and name != "__version__":
        from taskwarden import client

        return getattr(client, name)
    raise AttributeError(f"module 'taskwarden' has no attribute {name!r}")
