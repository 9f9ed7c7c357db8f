"""The deployment files: ``compose.yaml`` starts in order on its first ``up`` and holds no
default secret, the Kubernetes manifests under ``deploy/kubernetes/`` are valid against the
API's schemas (``kubernetes-validate``, offline), and the health checks both run answer as
they should against a real Redis."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from taskwarden import keys
from taskwarden.config import Settings
from taskwarden.config.environment import unknown_variables
from taskwarden.config.settings import ENV_PREFIX
from taskwarden.store import Store

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.35.0"  # the newest schemas kubernetes-validate 1.35.0 bundles
ONE_SHOT = {"minio-bucket"}  # a job that exits: health is its exit status
SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == "Deployment"}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


# compose


def test_compose_has_a_healthcheck_on_every_long_running_service() -> None:
    """Every service but the one-shot bucket job says when it is healthy."""
    services = compose()["services"]
    assert {"redis", "minio", "minio-bucket", "beat", "control", "poll", "archive", "api"} <= set(
        services
    )
    missing = [n for n, s in services.items() if n not in ONE_SHOT and not s.get("healthcheck")]
    assert missing == []


def test_compose_waits_for_what_each_service_needs() -> None:
    """The taskwarden services wait for a healthy Redis and the bucket job's success, and
    the bucket job for a healthy MinIO: no `up` races a dependency."""
    services = compose()["services"]
    for name in ("beat", "control", "poll", "archive", "api"):
        assert services[name]["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "minio-bucket": {"condition": "service_completed_successfully"},
        }, name
    assert services["minio-bucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["minio-bucket"]["restart"] == "on-failure"


def test_compose_api_is_published_with_read_auth_and_a_required_token() -> None:
    """The API listens beyond loopback, so reads need the token, which has no default."""
    api = compose()["services"]["api"]
    assert api["command"][:3] == ["api", "--host", "0.0.0.0"]  # noqa: S104 a value read
    assert api["ports"] == ["8788:8788"]
    assert api["environment"]["TASKWARDEN_API__READ_AUTH"] == "true"
    assert api["environment"]["TASKWARDEN_API__TOKEN"].startswith("${TASKWARDEN_API__TOKEN:?")
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_compose_holds_no_default_secret() -> None:
    """A secret is required (``${VAR:?message}``) or passed through empty (``${VAR:-}``),
    never given a default value; MinIO's password is required wherever it is used."""
    text = COMPOSE.read_text()
    defaults = re.findall(r"\$\{(\w+):?-([^}]*)\}", text)
    assert [(var, value) for var, value in defaults if SECRET.search(var) and value] == []
    assert "change-me" not in text
    uses = re.findall(r"\$\{MINIO_PASSWORD([^}]*)\}", text)
    assert len(uses) == 3
    assert all(use.startswith(":?set MINIO_PASSWORD") for use in uses)


def test_compose_passes_every_provider_credential_through() -> None:
    """Each provider's credential fields are passed through from the environment."""
    env = compose()["x-taskwarden"]["environment"]
    expected = {
        "GEOBOX": ["TOKEN", "APIKEY", "USERNAME", "PASSWORD"],
        "UP42": ["USERNAME", "PASSWORD", "PROJECT_ID", "API_KEY", "TOKEN"],
        "DESCARTESLABS": ["CLIENT_ID", "REFRESH_TOKEN", "TOKEN"],
        "EARTHONE": ["CLIENT_ID", "REFRESH_TOKEN", "TOKEN"],
        "ISAHIT": ["ACCESS_ID", "SECRET_KEY"],
    }
    for provider, fields in expected.items():
        for field in fields:
            var = f"TASKWARDEN_PROVIDERS__{provider}__{field}"
            assert env.get(var) == f"${{{var}:-}}", var


# Kubernetes


def test_kubernetes_manifests_are_valid() -> None:
    """Every manifest validates against the Kubernetes API schemas, unknown fields refused."""
    docs = manifests()
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_refuses_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field is refused."""
    broken = deployments()["taskwarden-poll"]
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kubernetes_runs_every_role_and_consumes_every_queue() -> None:
    """One beat (never two at once), the API, and workers that between them consume every
    queue; each container with resource requests and a memory limit."""
    found = deployments()
    assert set(found) == {f"taskwarden-{r}" for r in ("beat", "control", "poll", "archive", "api")}
    beat = found["taskwarden-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    consumed: set[str] = set()
    for name, deployment in found.items():
        spec = container(deployment)
        resources = spec["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name
        args = spec["args"]
        if args[0] == "worker":
            consumed |= set(args[args.index("-Q") + 1].split(","))
    queues = {keys.QUEUE_DEFAULT, keys.QUEUE_DISPATCH, keys.QUEUE_POLL, keys.QUEUE_WEBHOOK,
              keys.QUEUE_ARCHIVE}  # fmt: skip
    assert consumed == queues


def test_kubernetes_api_probes_and_service() -> None:
    """The API's liveness is /healthz and its readiness /readyz, on the port its Service
    targets; workers have the heartbeat probe."""
    found = deployments()
    api = container(found["taskwarden-api"])
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["ports"] == [{"name": "http", "containerPort": 8788}]
    assert "8788" in api["args"]
    (service,) = [d for d in manifests() if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == found["taskwarden-api"]["spec"]["selector"]["matchLabels"]
    for role in ("control", "poll", "archive"):
        assert container(found[f"taskwarden-{role}"])["livenessProbe"]["exec"]["command"] == (
            worker_check()
        ), role


def test_kubernetes_settings_are_ones_taskwarden_accepts() -> None:
    """The ConfigMap names only settings the strict configuration knows."""
    (config,) = [d for d in manifests() if d["kind"] == "ConfigMap"]
    assert config["data"]["TASKWARDEN_API__READ_AUTH"] == "true"
    assert unknown_variables(dict(config["data"]), Settings, ENV_PREFIX) == []


# the health checks themselves, against a real Redis


def worker_check() -> list[str]:
    test = compose()["x-taskwarden"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return list(test[1:])


def run_check(command: list[str], redis_url: str, tmp_path: Path) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {"TASKWARDEN_REDIS_URL": redis_url, "TASKWARDEN_DATA_DIR": str(tmp_path)}
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    return subprocess.run(argv, env=env, capture_output=True, timeout=60).returncode


def test_worker_check_follows_this_hosts_heartbeat(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    """The worker health check (compose and Kubernetes) fails with no heartbeat from this
    host's Celery node, passes with one, and ignores another node's."""
    check = worker_check()
    assert run_check(check, redis_url, tmp_path) == 1
    store.worker_heartbeat("celery@some-other-host", time.time(), 30.0, [keys.QUEUE_POLL])
    assert run_check(check, redis_url, tmp_path) == 1
    store.worker_heartbeat(f"celery@{socket.gethostname()}", time.time(), 30.0, [keys.QUEUE_POLL])
    assert run_check(check, redis_url, tmp_path) == 0


def test_beat_check_follows_the_dispatch_heartbeat(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    """compose's beat health check fails until a dispatch heartbeat is written, then passes."""
    test = compose()["services"]["beat"]["healthcheck"]["test"]
    assert run_check(test[1:], redis_url, tmp_path) == 1
    store.heartbeat("dispatch", time.time(), ttl=30.0)
    assert run_check(test[1:], redis_url, tmp_path) == 0
