"""Rejected credentials end a watch in `error` with the platform's words, without hammering:
for every provider, a rejection that survives the one refresh each adapter allows is final."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.simulator.generic import profile as generic_profile
from taskwarden.simulator.server import SimulatorServer

from .conftest import Warden, running_warden

MAX_REQUESTS = 4  # per watch: a status call, a token refresh, the retried call, and one spare


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warden]:
    """A warden whose credentials every platform refuses, on a simulator of its own (its
    request counts are this module's alone)."""
    with SimulatorServer() as sim:
        dl = sim.descarteslabs.env(sim.url)
        var = "TASKWARDEN_PROVIDERS__"
        env = {
            **dl,
            f"{var}DESCARTESLABS__REFRESH_TOKEN": "revoked-refresh-token",
            f"{var}GEOBOX__TOKEN": "revoked-token",
            f"{var}UP42__BASE_URL": sim.up42_url,
            f"{var}UP42__USERNAME": "sim-user",
            f"{var}UP42__PASSWORD": "old-password",
            f"{var}ISAHIT__BASE_URL": sim.isahit_url,
            f"{var}ISAHIT__ACCESS_ID": "sim-access-id",
            f"{var}ISAHIT__SECRET_KEY": "rotated-secret",
            f"{var}HTTP__PROFILES": json.dumps(
                {"acme": generic_profile(sim.generic_url, key="revoked-key")}
            ),
        }
        with running_warden(tmp_path_factory.mktemp("refused"), sim, **env) as w:
            yield w


def _geobox(sim: SimulatorServer) -> tuple[str, dict[str, Any]]:
    return sim.geobox.add_task(outcome="never").uuid, {}


def _up42(sim: SimulatorServer) -> tuple[str, dict[str, Any]]:
    job = sim.up42.add_job(outcome="never")
    return job.id, {"project_id": job.spec.project_id}


def _descarteslabs(sim: SimulatorServer) -> tuple[str, dict[str, Any]]:
    reg = sim.descarteslabs.add_copy_job(outcome="never").registration
    return reg["remote_id"], reg["params"]


def _isahit(sim: SimulatorServer) -> tuple[str, dict[str, Any]]:
    task = sim.isahit.add_task(outcome="never")
    return task.task_id, {"project_id": task.script.project_id}


def _http(sim: SimulatorServer) -> tuple[str, dict[str, Any]]:
    job = sim.generic.add_task(outcome="never")
    return f"acme:{job.id}", {"project": job.script.project}


@pytest.mark.parametrize(
    ("provider", "make", "said"),
    [
        ("geobox", _geobox, "(401 Unauthorized): Could not validate credentials"),
        ("up42", _up42, "(401): invalid_grant: Invalid user credentials"),
        ("descarteslabs", _descarteslabs, "(401 Unauthorized): invalid_grant"),
        ("isahit", _isahit, "(401 Unauthorized): Unauthorized"),
        ("http", _http, "(401 Unauthorized): invalid API key"),
    ],
)
def test_rejected_credentials_end_the_watch_in_error_after_a_few_requests(
    refused: Warden,
    provider: str,
    make: Callable[[SimulatorServer], tuple[str, dict[str, Any]]],
    said: str,
) -> None:
    """401/403 that a refresh does not cure: `error` at the first check, quoting the platform,
    after at most MAX_REQUESTS requests to it; and none afterwards."""
    sim = refused.sim
    remote_id, params = make(sim)
    before = sim.stats.count(platform=provider if provider != "http" else "generic")
    refused.send_track(provider=provider, remote_id=remote_id, params=params)
    watch = refused.wait_final(watch_id(provider, remote_id), timeout=60)
    assert watch.state is State.ERROR, watch.last_error
    assert watch.errors == 1  # permanent: no retries
    assert watch.last_error is not None and said in watch.last_error  # the platform's words
    platform = provider if provider != "http" else "generic"
    spent = sim.stats.count(platform=platform) - before
    assert 1 <= spent <= MAX_REQUESTS, spent
    time.sleep(2)  # ten poll intervals of this warden: an ended watch is never checked again
    assert sim.stats.count(platform=platform) - before == spent
    assert not any(
        secret in watch.last_error
        for secret in ("revoked-token", "old-password", "rotated-secret", "revoked-key")
    )
