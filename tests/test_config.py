"""Settings: read from TASKWARDEN_* variables, validated, with errors that name the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from taskwarden.config.environment import unknown_variables
from taskwarden.config.settings import (
    ENV_PREFIX,
    ApiSettings,
    Settings,
    load_settings,
    open_reads_refusal,
)
from taskwarden.errors import ConfigError
from taskwarden.simulator.server import SimulatorServer

from .conftest import warden_env

ANY = "0.0.0.0"  # noqa: S104  # every interface: what the API must refuse with open reads


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


@pytest.mark.parametrize(
    ("variable", "nearest"),
    [
        ("TASKWARDEN_API__HOTS", "did you mean TASKWARDEN_API__HOST?"),
        ("TASKWARDEN_API_HOST", "did you mean TASKWARDEN_API__HOST?"),
        ("TASKWARDEN_REDIS_ULR", "did you mean TASKWARDEN_REDIS_URL?"),
        ("TASKWARDEN_PROVIDER__GEOBOX__TOKEN", "did you mean TASKWARDEN_PROVIDERS__GEOBOX__TOKEN?"),
        ("TASKWARDEN_PROVIDERS__GEOBOX__TOKN", "did you mean TASKWARDEN_PROVIDERS__GEOBOX__TOKEN?"),
        ("TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ATEMPTS",
         "did you mean TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ATTEMPTS?"),
        ("TASKWARDEN_RETRY_POLICIES__GEOBOX__BACKOFF",
         "did you mean TASKWARDEN_RETRY_POLICIES__GEOBOX__BACKOFF_COEFFICIENT?"),
        ("taskwarden_poll__maximun", "did you mean TASKWARDEN_POLL__MAXIMUM?"),
        ("TASKWARDEN_API__HOST__NAME", "TASKWARDEN_API__HOST takes a value, nothing below it"),
        ("TASKWARDEN_ZZZ", "valid after TASKWARDEN_: API, ARCHIVE_CHUNK_SIZE"),
    ],
)  # fmt: skip
def test_an_unknown_variable_stops_the_load_naming_the_nearest_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, nearest: str
) -> None:
    """A TASKWARDEN_* variable that names no setting (a typo pydantic-settings would ignore,
    leaving the default) is refused, with the valid name nearest to it."""
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ConfigError, match="unknown settings") as caught:
        load_settings()
    assert f"{variable}: no such setting; {nearest}" in str(caught.value)


def test_every_variable_the_project_uses_is_known(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The variables of the test wardens, the compose file, dict keys of the caller's choosing
    (providers, profiles), JSON for a whole model, and those read outside Settings (the test
    suite's) all load."""
    sim = SimpleNamespace(geobox_url="http://127.0.0.1:1/geobox/v1/")  # all warden_env reads
    env = warden_env("redis://127.0.0.1:1/0", cast(SimulatorServer, sim), tmp_path)
    compose = (Path(__file__).parents[1] / "compose.yaml").read_text()
    env.update(dict.fromkeys(re.findall(r"(TASKWARDEN_\w+):", compose), "x"))
    env.update({
        "TASKWARDEN_S3__ALLOW_HTTP": "true",
        "TASKWARDEN_ATOMIC_FETCH": "false",
        "TASKWARDEN_RETRY_POLICIES__GEOBOX__MAXIMUM_ATTEMPTS": "3",
        "TASKWARDEN_RATE_LIMITS__GEOBOX__RATE": "3",
        "TASKWARDEN_PROVIDERS__HTTP__PROFILES__ACME__STATUS_URL": "http://acme.test/{id}",
        "TASKWARDEN_API": '{"port": 8788}',
        "TASKWARDEN_TEST_CHROMIUM": "/usr/bin/chromium",
        "TASKWARDEN_UP42_LEGACY_PYTHON": "/usr/bin/python3",
    })  # fmt: skip
    assert unknown_variables(env, Settings, ENV_PREFIX) == []


@pytest.mark.parametrize(
    ("host", "read_auth", "allow", "refused"),
    [
        ("127.0.0.1", False, False, False),
        ("localhost", False, False, False),
        ("::1", False, False, False),
        ("[::1]", False, False, False),
        ("127.0.0.2", False, False, False),
        (ANY, False, False, True),
        ("::", False, False, True),
        ("192.168.1.10", False, False, True),
        ("warden.internal", False, False, True),
        (ANY, True, False, False),
        (ANY, False, True, False),
    ],
)
def test_open_reads_beyond_loopback_need_an_explicit_yes(
    host: str, read_auth: bool, allow: bool, refused: bool
) -> None:
    """The API listening beyond loopback with reads open (no READ_AUTH) is refused unless
    TASKWARDEN_API__ALLOW_OPEN_READS says so; the refusal names both ways out."""
    api = ApiSettings(host=host, read_auth=read_auth, allow_open_reads=allow)
    why = open_reads_refusal(api)
    assert (why is not None) == refused
    if why is not None:
        assert "TASKWARDEN_API__READ_AUTH=true" in why
        assert "TASKWARDEN_API__ALLOW_OPEN_READS=true" in why


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["stats"], {"TASKWARDEN_API__HOTS": ANY}, "did you mean TASKWARDEN_API__HOST?"),
        (["api", "--host", ANY, "--port", "0"], {}, "TASKWARDEN_API__ALLOW_OPEN_READS"),
        (["run"], {"TASKWARDEN_API__HOST": ANY}, "TASKWARDEN_API__READ_AUTH=true"),
    ],
)
def test_the_commands_refuse_to_start(
    tmp_path: Path, argv: list[str], env: dict[str, str], says: str
) -> None:
    """A typo'd variable stops any command; `api` and `run` refuse open reads beyond loopback
    before they listen (or start anything)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TASKWARDEN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "taskwarden", *argv],
        env={**clean, "TASKWARDEN_DATA_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "redis").exists()  # refused before an embedded Redis was started
