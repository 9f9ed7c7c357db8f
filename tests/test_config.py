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


def test_retention_by_final_state_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKWARDEN_RETENTION__FINISHED applies to every final state without its own value; a
    state's own variable overrides it; the default is 30 days; a bad value names its variable."""
    assert set(load_settings().retention.by_state().values()) == {30 * 24 * 3600.0}
    monkeypatch.setenv("TASKWARDEN_RETENTION__FINISHED", "3600")
    monkeypatch.setenv("TASKWARDEN_RETENTION__FAILED", "86400")
    monkeypatch.setenv("TASKWARDEN_RETENTION__TIMED_OUT", "60")
    settings = load_settings()
    assert settings.retention.by_state() == {"cancelled": 3600.0, "error": 3600.0,
                                             "failed": 86400.0, "succeeded": 3600.0,
                                             "timed_out": 60.0}  # fmt: skip
    assert settings.store_options()["retention"] == settings.retention.by_state()
    monkeypatch.setenv("TASKWARDEN_RETENTION__SUCCEEDED", "0")
    with pytest.raises(ConfigError, match="TASKWARDEN_RETENTION__SUCCEEDED"):
        load_settings()
