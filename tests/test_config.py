"""Settings: read from TASKWARDEN_* variables, validated, with errors that name the variable."""

from __future__ import annotations

import pytest

from taskwarden.config.settings import load_settings
from taskwarden.errors import ConfigError


def test_nested_provider_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested variables reach the provider settings; secrets stay secret in reprs."""
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL", "http://127.0.0.1:1/geobox/v1")
    monkeypatch.setenv("TASKWARDEN_PROVIDERS__GEOBOX__TOKEN", "s3cr3t-token")
    monkeypatch.setenv("TASKWARDEN_POLL__MAXIMUM", "30")
    settings = load_settings()
    assert settings.providers.geobox.base_url == "http://127.0.0.1:1/geobox/v1/"
    assert settings.providers.geobox.token is not None
    assert settings.providers.geobox.token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t-token" not in repr(settings)
    assert settings.poll_policy().maximum == 30


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKWARDEN_DISPATCH_INTERVAL", "-1"),
        ("TASKWARDEN_POLL__INITIAL", "soon"),
        ("TASKWARDEN_REDIS_URL", "http://localhost"),
        ("TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL", "ftp://x"),
        ("TASKWARDEN_LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value is refused with a message naming the variable to set."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_default_archive_is_under_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """With no archive URL, outputs go to a folder under the data directory."""
    monkeypatch.setenv("TASKWARDEN_DATA_DIR", str(tmp_path))
    assert load_settings().resolved_archive_url == f"file://{tmp_path}/archive"


@pytest.mark.parametrize(("lease", "deadline"), [("30", "30"), ("10", "30"), ("5", "9.5")])
def test_a_lease_no_longer_than_the_check_deadline_is_refused(
    monkeypatch: pytest.MonkeyPatch, lease: str, deadline: str
) -> None:
    """A check must be able to end inside its lease: a lease up to the deadline is refused, and
    the message names both variables and their values."""
    monkeypatch.setenv("TASKWARDEN_LEASE_SECONDS", lease)
    monkeypatch.setenv("TASKWARDEN_POLL__CHECK_DEADLINE", deadline)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"TASKWARDEN_LEASE_SECONDS ({lease}) must exceed" in str(err.value)
    assert f"TASKWARDEN_POLL__CHECK_DEADLINE ({deadline})" in str(err.value)
    monkeypatch.setenv("TASKWARDEN_LEASE_SECONDS", str(float(deadline) + 1))
    assert load_settings().poll.check_deadline == float(deadline)
