"""The command line on the zero-setup path: `taskwarden run` with its embedded Redis, found again
by later commands; `taskwarden simulate` serving on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from taskwarden import Client
from taskwarden.redis_server import free_port
from taskwarden.simulator.server import SimulatorServer

from .conftest import SIM_TOKEN, wait_for


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskwarden", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_with_embedded_redis_end_to_end(tmp_path: Path, sim: SimulatorServer) -> None:
    """With no Redis configured, `run` starts its own; `track` and `show` find it, and a Client
    finds the API `run` serves with the token it generated; SIGTERM stops everything, Redis
    included, and the archive is in the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_")}
    env |= {
        "TASKWARDEN_DATA_DIR": str(tmp_path),
        "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
        "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": SIM_TOKEN,
        "TASKWARDEN_DISPATCH_INTERVAL": "0.2",
        "TASKWARDEN_POLL__INITIAL": "0.2",
        "TASKWARDEN_POLL__MAXIMUM": "0.5",
        "TASKWARDEN_API__PORT": str(free_port()),
    }
    task = sim.geobox.add_task(running_seconds=0.5, file_name="out.bin", file_size=1000)
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "run", "-c", "1"], env=env, stdout=log, stderr=log
    )
    try:
        url_file = tmp_path / "redis.url"
        wait_for(url_file.exists, timeout=20)
        assert oct(url_file.stat().st_mode & 0o777) == "0o600"  # it holds the Redis password
        tracked = cli(env, "track", "geobox", task.uuid, "--json")
        assert tracked.returncode == 0, tracked.stderr
        wid = json.loads(tracked.stdout)["watch_id"]

        def succeeded() -> bool:
            shown = cli(env, "show", wid, "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["state"] == "succeeded"

        wait_for(succeeded, timeout=60, every=0.5)
        # `run` serves the API too, with a generated token that a client on the machine finds
        token_file = tmp_path / "api-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        api = f"http://127.0.0.1:{env['TASKWARDEN_API__PORT']}"
        wait_for(lambda: _answers(api), timeout=30, every=0.2)
        with Client(api, token_file.read_text().strip()) as tw:
            assert tw.wait(wid, timeout=30, progress_bar=False)["state"] == "succeeded"
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(30)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    # off a terminal, `run` and every process it starts write JSON lines only
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert [e["event"] for e in map(json.loads, lines)].count("run.started") == 1
    assert (
        tmp_path / "archive" / "geobox" / task.uuid / "out.bin"
    ).read_bytes() == task.output_bytes()
    redis_url = url_file.read_text()
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    try:
        client.ping()
        stopped = False
    except redis.ConnectionError:
        stopped = True
    assert stopped, "the embedded Redis outlived `taskwarden run`"


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_simulate_serves_on_the_given_port() -> None:
    """`taskwarden simulate --port N` answers Geobox calls and control calls on loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "simulate", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/_control/stats", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=20, every=0.1)
        made = httpx.post(f"{base}/_control/geobox/tasks", json=[{"uuid": "abc-1"}], timeout=5)
        assert made.status_code == 201
        doc = httpx.get(
            f"{base}/geobox/v1/tasks/abc-1/", headers={"Authorization": f"Bearer {SIM_TOKEN}"}
        )
        assert doc.json()["uuid"] == "abc-1"
        denied = httpx.get(f"{base}/geobox/v1/tasks/abc-1/")
        assert denied.status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_providers_lists_builtins_with_settings_and_hides_secrets() -> None:
    """`taskwarden providers` names each provider with its variables; secret values never show."""
    env = {**os.environ, "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "very-secret-value"}
    out = cli(env, "providers")
    assert out.returncode == 0, out.stderr
    assert "geobox  (built in: taskwarden.providers.geobox:build)" in out.stdout
    assert "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL" in out.stdout
    assert "very-secret-value" not in out.stdout
    listed = json.loads(cli(env, "providers", "--json").stdout)
    assert "very-secret-value" not in json.dumps(listed)
    assert {p["name"] for p in listed} >= {"geobox"}


def test_providers_masks_only_credentials() -> None:
    """Only credential fields are masked: a token lifetime or a token URL is shown as set."""
    env = {
        **os.environ,
        "TASKWARDEN_PROVIDERS__UP42__USERNAME": "sim-user",
        "TASKWARDEN_PROVIDERS__UP42__PASSWORD": "very-secret-value",
        "TASKWARDEN_PROVIDERS__UP42__TOKEN_LIFETIME": "123.0",
        "TASKWARDEN_PROVIDERS__UP42__TOKEN_URL": "https://auth.example.com/token",
    }
    listed = {p["name"]: p for p in json.loads(cli(env, "providers", "--json").stdout)}
    up42 = listed["up42"]["settings"]
    assert up42["token_lifetime"] == 123.0
    assert up42["token_url"] == "https://auth.example.com/token"
    assert up42["username"] == "sim-user"
    assert up42["password"] == "***"
    assert up42["token"] is None  # unset credentials say so
    out = cli(env, "providers").stdout
    assert "TASKWARDEN_PROVIDERS__UP42__TOKEN_LIFETIME = 123.0" in out
    assert "very-secret-value" not in out


def test_plugin_provider_from_entry_point(tmp_path: Path) -> None:
    """A provider shipped by another package through the entry-point group is listed and used."""
    dist = tmp_path / "acme_provider-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-provider\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[taskwarden.providers]\nacme = acme_provider:build\ngeobox = acme_provider:build\n"
    )
    (tmp_path / "acme_provider.py").write_text("def build(settings, client):\n    return 'acme'\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TASKWARDEN_DATA_DIR": str(tmp_path / "data")}
    listed = {p["name"]: p for p in json.loads(cli(env, "providers", "--json").stdout)}
    assert listed["acme"] == {
        "name": "acme",
        "factory": "acme_provider:build",
        "builtin": False,
        "settings": {},
    }
    assert listed["geobox"]["builtin"] is True  # a plugin cannot take over a built-in name
    registered = cli(env, "track", "acme", "job-1", "--json", "--no-archive")
    assert registered.returncode != 2, registered.stderr  # the plugin's name is accepted


def test_worker_refuses_an_evicting_redis(tmp_path: Path) -> None:
    """A Redis that may evict keys is refused at start-up with the setting to change."""
    import redis

    from taskwarden.redis_server import RedisServer

    with RedisServer(tmp_path / "redis", persist=False) as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
        env = {
            **os.environ,
            "TASKWARDEN_REDIS_URL": server.url,
            "TASKWARDEN_DATA_DIR": str(tmp_path),
        }
        for command in (["worker"], ["beat"], ["run"]):
            out = cli(env, *command)
            assert out.returncode == 1, (command, out.stderr[-500:])
            assert "maxmemory-policy allkeys-lru" in out.stderr
            assert "noeviction" in out.stderr


def test_redis_check_warns_when_nothing_persists(tmp_path: Path) -> None:
    """A Redis with no persistence is allowed, with a warning that says what a restart loses."""
    from taskwarden.redis_server import RedisServer, check_redis
    from taskwarden.store.connection import connect

    with RedisServer(tmp_path / "volatile", persist=False) as volatile:
        assert any(
            "persists nothing" in w
            for w in check_redis(connect(volatile.url, decode_responses=True))
        )
    with RedisServer(tmp_path / "durable", persist=True) as durable:
        assert check_redis(connect(durable.url, decode_responses=True)) == []


def test_redis_older_than_6_2_is_refused() -> None:
    """The broker transport idles in BLMOVE (Redis 6.2); the check reads INFO's version."""
    from taskwarden.redis_server import too_old

    assert [v for v in ("5.0.7", "6.0.16", "6.2.0", "6.2.14", "7.0.15", "10.1") if too_old(v)] == [
        "5.0.7",
        "6.0.16",
    ]


def test_a_long_running_command_backfills_what_an_older_version_stored(
    tmp_path: Path, redis_url: str
) -> None:
    """`beat` (like `worker` and `run`) brings an older store up to date as it starts: a watch
    without its label index entry, as an older version wrote it, is then found by label."""
    from taskwarden.models import Registration
    from taskwarden.store.watches import Store

    store = Store.from_url(redis_url)
    watch, _ = store.register(
        Registration(provider="geobox", remote_id="old-1", labels={"team": "maps"}), 1.0
    )
    store.redis.delete(*store.redis.keys("taskwarden:label:*"))
    assert store.list_watches(labels={"team": "maps"})[0] == []
    env = {**os.environ, "TASKWARDEN_REDIS_URL": redis_url, "TASKWARDEN_DATA_DIR": str(tmp_path)}
    beat = subprocess.Popen(
        [sys.executable, "-m", "taskwarden", "beat"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: store.redis.get("taskwarden:schema"), timeout=30)
    finally:
        beat.terminate()
        beat.wait(30)
    assert [w.id for w in store.list_watches(labels={"team": "maps"})[0]] == [watch.id]
    store.redis.close()


def test_a_global_webhook_on_a_private_address_stops_the_warden_at_start(
    tmp_path: Path, redis_url: str
) -> None:
    """TASKWARDEN_WEBHOOKS__URL is judged as a watch's webhook is at registration: a loopback
    receiver is refused before anything starts, unless private addresses are allowed."""
    env = {
        **os.environ,
        "TASKWARDEN_REDIS_URL": redis_url,
        "TASKWARDEN_DATA_DIR": str(tmp_path),
        "TASKWARDEN_WEBHOOKS__URL": "http://127.0.0.1:9/hook",
        "TASKWARDEN_WEBHOOKS__SECRET": "s3cret-for-tests",
    }
    refused = cli(env, "beat")
    assert refused.returncode != 0
    assert "TASKWARDEN_WEBHOOKS__URL: 127.0.0.1 is a loopback address" in refused.stderr
    assert "TASKWARDEN_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES=true" in refused.stderr
