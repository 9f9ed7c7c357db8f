"""The official ``up42-py`` 4.3 SDK, logged in to a simulator, for tests that let the SDK judge.

The SDK cannot be pointed at another base URL by configuration: ``up42.host`` builds every URL
as ``https://api.up42.{DOMAIN}…`` / ``https://auth.up42.{DOMAIN}…``. We replace the three
functions of ``up42.host`` that build URLs and nothing else: the session, the OAuth code, the
STAC client (pystac-client), the asset downloads and the job classes run unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden.simulator.server import SimulatorServer

KEYCLOAK = "realms/public/protocol/openid-connect"


def keycloak_token_url(sim: SimulatorServer) -> str:
    """Where 4.3 asks for tokens, on the simulator."""
    return f"{sim.up42_url}/{KEYCLOAK}/token"


def point_at(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``up42`` module with its hosts on the simulator (not logged in yet)."""
    monkeypatch.setenv("UP42_DISABLE_VERSION_CHECK", "true")  # no call to PyPI on import
    up42 = pytest.importorskip("up42", reason="the up42-py SDK is not installed")
    from up42 import host

    base = sim.up42_url
    monkeypatch.setattr(host, "endpoint", lambda path: f"{base}{path}")
    monkeypatch.setattr(host, "token_endpoint", lambda: keycloak_token_url(sim))
    monkeypatch.setattr(host, "user_info_endpoint", lambda: f"{base}/{KEYCLOAK}/userinfo")
    return up42


def logged_in(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``up42-py`` logged in to the simulator with the simulated user's password."""
    up42 = point_at(sim, monkeypatch)
    up42.authenticate(username="sim-user", password="sim-password")
    return up42
