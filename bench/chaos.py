"""A storm: hundreds of watches while workers are killed, Redis restarts and the platform fails.

    python bench/chaos.py [--watches 300] [--storm 45] [--seed 1]

Runs the real service (beat, poll and archive workers under the supervisor, an append-only Redis)
against the simulator, registers watches with scripted fates by Celery message in waves, and for
``--storm`` seconds keeps doing damage: SIGKILL of a worker's busy child or of a whole worker
process, a Redis restart, bursts of 5xx, connection resets, 429 with Retry-After and truncated
downloads. Then it waits for every watch to end and checks each one against what the simulator
scripted: final state, and for successes the archive (every output's bytes against the manifest
and the platform's checksum, and nothing archived twice). Prints the counts; exit 0 only when no
watch was lost, duplicated or wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from celery import Celery

from taskwarden.lifecycle import State
from taskwarden.models import watch_id
from taskwarden.processes import Service
from taskwarden.redis_server import RedisServer
from taskwarden.simulator.geobox import GeoboxTask
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Store

FATES = [  # (weight, script, expected final state)
    (5, {"outcome": "success_file"}, State.SUCCEEDED),
    (1, {"outcome": "success_asset"}, State.SUCCEEDED),
    (1, {"outcome": "failure"}, State.FAILED),
    (1, {"outcome": "aborted"}, State.CANCELLED),
    (1, {"outcome": "never"}, State.TIMED_OUT),
]
NEVER_TIMEOUT = 30.0


def script(rng: random.Random) -> tuple[dict[str, object], State]:
    weights = [w for w, _, _ in FATES]
    _, fate, expect = rng.choices(FATES, weights)[0]
    spec = dict(fate)
    spec |= {"pending_seconds": rng.uniform(0, 3), "running_seconds": rng.uniform(1, 10)}
    spec |= {"file_size": rng.randint(1, 200_000), "file_name": f"out-{rng.randrange(10**6)}.bin"}
    return spec, expect


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def damage(rng: random.Random, service: Service, redis: RedisServer, sim: SimulatorServer,
           restarted: list[bool]) -> str:  # fmt: skip
    roles = list(service.argvs)
    action = rng.choice(["kill-child", "kill-child", "kill-worker", "faults", "faults", "redis"])
    if action == "redis" and restarted[0]:
        action = "faults"
    if action == "kill-child":
        role = rng.choice(["poll", "archive"])
        kids = children(service.processes[roles.index(role)].pid)
        if kids:
            os.kill(rng.choice(kids), signal.SIGKILL)
        return f"SIGKILL a {role} worker child"
    if action == "kill-worker":
        role = rng.choice(roles)
        os.kill(service.processes[roles.index(role)].pid, signal.SIGKILL)
        return f"SIGKILL the {role} process"
    if action == "redis":
        restarted[0] = True
        redis.stop()
        time.sleep(rng.uniform(0.5, 2))
        redis.start()
        return "Redis restart"
    route = rng.choice(["tasks/{uuid}/", "tasks/{uuid}/status/", "files/{uuid}/download/"])
    kind = rng.choice(["status", "reset", "rate_limit", "truncate"])
    fault: dict[str, object] = {"kind": kind, "route": route, "count": rng.randint(5, 40)}
    if kind == "rate_limit":
        fault["retry_after"] = "1"
    if kind == "truncate":
        fault |= {"route": "files/{uuid}/download/", "keep_bytes": 100}
    sim.inject(**fault)
    return f"{fault['count']} x {kind} on {fault['route']}"


def verify(store: Store, archive: Path, task: GeoboxTask, expect: State) -> str:
    """'ok', 'lost', 'duplicated' or 'wrong: ...' for one watch."""
    watch = store.get(watch_id("geobox", task.uuid))
    if watch is None:
        return "lost: no record"
    if not watch.state.final:
        due = store.redis.zscore("taskwarden:due:geobox", watch.id)
        lease = store.redis.zscore("taskwarden:leases", watch.id)
        tail = [(h["from"], h["to"], h["note"]) for h in store.history(watch.id)[-3:]]
        return (
            f"lost: {watch.state} raw={watch.raw_status} due={due} lease={lease} "
            f"now={time.time():.0f} errors={watch.errors} last={watch.last_error} history={tail}"
        )
    if watch.state is not expect:
        return f"wrong: {watch.state} (expected {expect}; {watch.last_error})"
    if expect is not State.SUCCEEDED:
        return "ok"
    notes = [h["note"] for h in store.history(watch.id)]
    if sum(1 for n in notes if n and n.startswith("archived ")) != 1:
        return "duplicated"
    folder = archive / "geobox" / task.uuid
    manifest = json.loads((folder / "manifest.json").read_text())
    names = {o["name"] for o in manifest["outputs"]}
    if {p.name for p in folder.iterdir()} != names | {"manifest.json"}:
        return "duplicated"  # something under the task's folder that the manifest does not own
    for out in manifest["outputs"]:
        if hashlib.sha256((folder / out["name"]).read_bytes()).hexdigest() != out["sha256"]:
            return f"wrong: {out['name']} does not match its manifest"
    if task.script.outcome == "success_file":
        served = {o["name"]: o["sha256"] for o in manifest["outputs"]}.get(task.script.file_name)
        if served != task.sha256:
            return "wrong: the archived file is not what the platform served"
    return "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=300)
    parser.add_argument("--storm", type=float, default=45.0, help="seconds of damage")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="taskwarden-chaos-"))
    with SimulatorServer() as sim:
        redis = RedisServer(tmp / "redis", persist=True).start()
        env = {
            "TASKWARDEN_REDIS_URL": redis.url,
            "TASKWARDEN_DATA_DIR": str(tmp / "data"),
            "TASKWARDEN_ARCHIVE_URL": (tmp / "archive").as_uri(),
            "TASKWARDEN_PROVIDERS__GEOBOX__BASE_URL": sim.geobox_url,
            "TASKWARDEN_PROVIDERS__GEOBOX__TOKEN": "sim-token",
            "TASKWARDEN_DISPATCH_INTERVAL": "0.25",
            "TASKWARDEN_POLL__INITIAL": "0.5",
            "TASKWARDEN_POLL__MAXIMUM": "2",
            "TASKWARDEN_RETRY__INITIAL_INTERVAL": "0.2",
            "TASKWARDEN_RETRY__MAXIMUM_INTERVAL": "2",
            "TASKWARDEN_RETRY__MAXIMUM_ATTEMPTS": "30",
            "TASKWARDEN_LEASE_SECONDS": "5",
            "TASKWARDEN_POLL__CHECK_DEADLINE": "3",
            "TASKWARDEN_ARCHIVE_LEASE_SECONDS": "10",
            # a registration held by a killed worker comes back after this (the least allowed)
            "TASKWARDEN_VISIBILITY_TIMEOUT": "60",
            "TASKWARDEN_LOG_FORMAT": "json",
        }
        planned = [script(rng) for _ in range(args.watches)]
        tasks: list[tuple[GeoboxTask, State]] = []
        actions: list[str] = []
        started = time.monotonic()
        with Service(env, poll_concurrency=2, log_dir=tmp / "logs") as service:
            producer = Celery(broker=redis.url, set_as_current=False)
            waves = [planned[i::4] for i in range(4)]
            restarted = [False]
            next_wave = 0
            while time.monotonic() - started < args.storm:
                if next_wave < len(waves) and time.monotonic() - started > next_wave * 5:
                    for spec, expect in waves[next_wave]:
                        task = sim.geobox.add_task(**spec)
                        kwargs: dict[str, object] = {"provider": "geobox", "remote_id": task.uuid}
                        if expect is State.TIMED_OUT:
                            kwargs["timeout"] = NEVER_TIMEOUT
                        producer.send_task("taskwarden.track", kwargs=kwargs)
                        tasks.append((task, expect))
                    next_wave += 1
                time.sleep(rng.uniform(2, 5))
                actions.append(damage(rng, service, redis, sim, restarted))
            sim.faults.clear()
            store = Store.from_url(redis.url)
            settle_by = time.monotonic() + 240
            while time.monotonic() < settle_by:
                if not any(
                    verify(store, tmp / "archive", t, e).startswith("lost") for t, e in tasks
                ):
                    break
                time.sleep(1)
            outcomes = Counter(verify(store, tmp / "archive", t, e).split(":")[0] for t, e in tasks)
            wrong = [(t.uuid, verify(store, tmp / "archive", t, e)) for t, e in tasks]
            restarts = dict(service.restarts)
            lost_ids = [
                t.uuid
                for t, e in tasks
                if verify(store, tmp / "archive", t, e) == "lost: no record"
            ]
            broker = {
                "queued": store.redis.llen("celery"),
                "unacked": store.redis.hlen("unacked"),
                "lost ids still in the broker": [
                    uuid
                    for uuid in lost_ids
                    if any(uuid in str(m) for m in store.redis.lrange("celery", 0, -1))
                    or any(uuid in str(m) for m in store.redis.hvals("unacked"))
                ],
            }
            store.redis.close()
        redis.stop()
    elapsed = time.monotonic() - started
    succeeded = sum(1 for _, e in tasks if e is State.SUCCEEDED)
    print(f"watches registered      {len(tasks)} (in {len(waves)} waves)")
    print(f"damage done             {len(actions)} actions over {args.storm:.0f} s:")
    for action, count in Counter(actions).most_common():
        print(f"    {count:3d} x {action}")
    print(f"processes restarted     {restarts or 'none'}")
    print(f"broker at the end       {broker}")
    print(f"ended as scripted       {outcomes['ok']} of {len(tasks)}")
    verified = succeeded - outcomes["duplicated"] - outcomes["wrong"]
    print(f"archives verified       {verified} of {succeeded}")
    print(f"lost                    {outcomes['lost']}")
    print(f"duplicated              {outcomes['duplicated']}")
    print(f"wrong                   {outcomes['wrong']}")
    for uuid, outcome in wrong:
        if outcome != "ok":
            print(f"    {uuid}: {outcome}")
    print(f"total time              {elapsed:.0f} s")
    if outcomes["ok"] == len(tasks):
        shutil.rmtree(tmp)
        return 0
    print(f"logs and archive kept in {tmp}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
