"""UP42 login as up42-py 4.3 does it: the environment's hosts, Keycloak's password grant with
the SDK's client id, and the adapter's request against the SDK's, field for field."""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden import net
from taskwarden.config.providers import Up42Settings
from taskwarden.config.settings import load_settings
from taskwarden.errors import ConfigError, CredentialsRejected
from taskwarden.lifecycle import Remote
from taskwarden.providers.base import Target
from taskwarden.simulator.server import SimulatorServer

from ..up42_sdk import keycloak_token_url, point_at
from .up42_kit import call, reset, settings_for

KEYCLOAK = "/realms/public/protocol/openid-connect/token"


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    return reset(server)


@pytest.mark.parametrize(
    ("fields", "base", "token"),
    [
        ({}, "https://api.up42.com", f"https://auth.up42.com{KEYCLOAK}"),
        ({"environment": "sa"}, "https://api.sa.up42.com", f"https://auth.sa.up42.com{KEYCLOAK}"),
        ({"environment": "sa", "domain": "dev"}, "https://api.sa.up42.dev",
         f"https://auth.sa.up42.dev{KEYCLOAK}"),
        ({"base_url": "https://api.up42.com/"}, "https://api.up42.com",
         f"https://auth.up42.com{KEYCLOAK}"),
        ({"base_url": "http://127.0.0.1:9/up42"}, "http://127.0.0.1:9/up42",
         f"http://127.0.0.1:9/up42{KEYCLOAK}"),
        ({"token_url": "https://sso.example/t/"}, "https://api.up42.com", "https://sso.example/t"),
        ({"project_id": "p", "api_key": "k"}, "https://api.up42.com",
         "https://api.up42.com/oauth/token"),
    ],
)  # fmt: skip
def test_the_environment_chooses_the_sdks_hosts(
    fields: dict[str, Any], base: str, token: str
) -> None:
    """ENVIRONMENT (and DOMAIN) give 4.3's API and Keycloak hosts (host.py); an explicit
    TOKEN_URL wins; another base URL keeps the token endpoint under it; project keys keep the
    v1 oauth/token."""
    settings = Up42Settings(**fields)
    assert (settings.base_url, settings.token_url) == (base, token)


def test_settings_come_from_the_environment_and_the_guard_trusts_the_token_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TASKWARDEN_PROVIDERS__UP42__ENVIRONMENT=sa is read, and the derived auth host is an
    operator URL to the URL guard (not a platform-handed one)."""
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__UP42__ENVIRONMENT", "sa")
    settings = load_settings()
    assert settings.providers.up42.token_url == f"https://auth.sa.up42.com{KEYCLOAK}"
    assert ("https", "auth.sa.up42.com", 443) in net.policy_for(settings, "up42").trusted


def test_a_base_url_of_the_other_region_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SA API under the default (eu) environment is refused, saying what to set, without
    echoing the password."""
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__UP42__BASE_URL", "https://api.sa.up42.com")
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__UP42__USERNAME", "me@example.com")
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__UP42__PASSWORD", "hunter2-secret")
    with pytest.raises(ConfigError, match="TASKWARDEN_PROVIDERS__UP42__ENVIRONMENT=sa") as caught:
        load_settings()
    assert "hunter2-secret" not in str(caught.value)


def test_the_adapters_login_is_the_sdks_field_for_field(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's own AccountTokenRetriever and the adapter each log in once; the simulator
    recorded the same path, content type, form fields in the same order, and no Basic auth."""
    point_at(sim, monkeypatch)
    from up42.http import config, oauth

    retriever = oauth.AccountTokenRetriever(
        config.AccountCredentialsSettings("sim-user", "sim-password")
    )
    oauth.Up42Auth(retriever, config.TokenProviderSettings(token_url=keycloak_token_url(sim)))
    job = sim.up42.add_processing(settle_seconds=None)
    assert call(sim, lambda p: p.fetch_status(Target(job.id))).remote is Remote.SUCCEEDED
    sdk, ours = sim.up42.tokens.requests
    assert ours == sdk
    assert dict(ours.form)["client_id"] == "up42-sdk" and dict(ours.form)["scope"] == "openid"


def test_keycloak_refusing_the_client_is_credentials_rejected(sim: SimulatorServer) -> None:
    """A Keycloak that does not know the client answers invalid_client: a permanent
    CredentialsRejected quoting it, after one token request."""
    sim.up42.configure({"client_ids": ["some-other-client"]})
    job = sim.up42.add_processing(settle_seconds=None)
    with pytest.raises(CredentialsRejected, match="invalid_client"):
        call(sim, lambda p: p.fetch_status(Target(job.id)))
    assert len(sim.up42.tokens.requests) == 1 and sim.up42.token_grants == 0


def test_the_simulators_default_token_url_is_keycloaks_path(sim: SimulatorServer) -> None:
    """With only BASE_URL set (as the tests and the demo do), logins go to the Keycloak path."""
    settings = settings_for(sim)
    assert settings.providers.up42.token_url == f"{sim.up42_url}{KEYCLOAK}"
