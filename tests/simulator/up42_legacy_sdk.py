"""Drive ``up42-py`` 0.34.1 (the last SDK with ``Job.track_status``, ``cancel_job`` and
``JobTask``) against the UP42 simulator. Run by ``test_up42_simulator.py`` with an interpreter
that has that SDK installed (it cannot share an environment with up42-py 4.x):

    python up42_legacy_sdk.py http://127.0.0.1:<port>/up42

Exits non-zero, with the reason, when the SDK and the simulator disagree. The SDK builds every
URL as ``https://api.up42.{env}``; ``Auth._endpoint`` and ``Auth._get_workspace`` (the only two
places that do) are replaced, everything else runs unchanged.
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
import tempfile
import warnings
from typing import Any

import requests  # present wherever the SDK is
import up42
from up42 import auth as up42_auth


def main(base: str) -> None:
    warnings.simplefilter("ignore")  # the SDK warns that jobs are deprecated on every call
    control = base.rsplit("/up42", 1)[0] + "/_control/up42"

    def add(spec: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = requests.post(f"{control}/tasks", json=spec, timeout=10).json()
        return created["tasks"][0]

    def shown(some_id: str) -> dict[str, Any]:
        return requests.get(f"{control}/tasks/{some_id}", timeout=10).json()

    def hashes(files: list[str], root: pathlib.Path) -> dict[str, str]:
        return {
            str(pathlib.Path(f).relative_to(root)): hashlib.sha256(
                pathlib.Path(f).read_bytes()
            ).hexdigest()
            for f in files
        }

    def workspace(self: Any) -> None:
        self.workspace_id = self._request("GET", f"{base}/users/me")["data"]["id"]

    up42_auth.Auth._endpoint = lambda self: base
    up42_auth.Auth._get_workspace = workspace

    for credentials in (
        {"project_id": "sim-project", "project_api_key": "sim-api-key"},  # client credentials
        {"username": "sim-user", "password": "sim-password"},  # password grant
    ):
        up42.authenticate(**credentials)
        assert up42.main._auth.workspace_id == "sim-workspace"

    made = add(
        {
            "pending_seconds": 2,
            "running_seconds": 4,
            "not_started_word": "NOT STARTED",
            "tasks": [
                {"block": "data", "quicklooks": ["a.jpeg"]},
                {"block": "ndvi", "members": [{"name": "ndvi.tif", "size": 20000},
                                              {"name": "sub/x.json", "size": 50}]},
            ],
        }
    )  # fmt: skip
    job = up42.initialize_job(made["id"], project_id="sim-project")
    assert job.status == "NOT STARTED", job.status
    assert job.track_status(report_time=5) == "SUCCEEDED"
    out = pathlib.Path(tempfile.mkdtemp())
    assert hashes(job.download_results(out), out) == shown(made["id"])["results_sha256"]
    assert len(job.get_results_json()["features"]) == 2
    statuses = [(t.info["status"], t.info["block"]["name"]) for t in job.get_jobtasks()]
    assert statuses == [("SUCCEEDED", "data"), ("SUCCEEDED", "ndvi")], statuses

    task = up42.initialize_jobtask(made["tasks"][1], made["id"], project_id="sim-project")
    files = task.download_results(out / "task")
    assert hashes(files, out / "task") == shown(made["tasks"][1])["results_sha256"]
    assert task.get_results_json()["type"] == "FeatureCollection"
    first = up42.initialize_jobtask(made["tasks"][0], made["id"], project_id="sim-project")
    looks = first.download_quicklooks(out / "looks")
    assert [pathlib.Path(p).name for p in looks] == ["quicklook_a.jpeg"]
    logs = job.get_logs(as_print=False, as_return=True)
    assert all(text.endswith("done\n") for text in logs.values()), logs

    # a zip, and a tarball with a link and a FIFO: regular files unpacked, the rest skipped
    link = {"name": "latest", "kind": "symlink", "target": "a.tif"}
    for kind, odd in (("zip", [link]), ("tgz", [link, {"name": "pipe", "kind": "fifo"}])):
        members = [{"name": "a.tif", "size": 300}, *odd]
        packed = add({"tasks": [{"results_format": kind, "members": members}]})
        unpacked = up42.initialize_job(packed["id"], project_id="sim-project")
        where = out / f"packed-{kind}"
        files = unpacked.download_results(where)
        got, wanted = hashes(files, where), shown(packed["id"])["results_sha256"]
        if kind == "zip":  # the SDK writes a zipped symlink as a file holding its target
            assert got.pop("latest") == hashlib.sha256(b"a.tif").hexdigest()
        assert got == wanted, (kind, got, wanted)

    running = up42.initialize_job(add({"outcome": "never"})["id"], project_id="sim-project")
    running.cancel_job()
    assert running.status == "CANCELLING"
    _raises(running.track_status, "Job has been cancelled!")
    failing = add({"outcome": "failure", "running_seconds": 1, "failure_word": "ERROR"})
    _raises(up42.initialize_job(failing["id"], project_id="sim-project").track_status, "failed")
    print("up42-py", up42.__version__, "agrees with the simulator")


def _raises(call: Any, words: str) -> None:
    try:
        call()
    except ValueError as exc:
        message = str(exc)
    else:
        raise AssertionError(f"expected ValueError({words!r})")
    if words not in message:
        raise AssertionError(f"expected {words!r} in {message!r}")


if __name__ == "__main__":
    main(sys.argv[1])
