"""The official ``isahitlab`` SDK (0.17, a test dependency) as the judge of what issue #10 added to
the isahit simulator and adapter: ``create_batch`` and ``create_tasks`` (one request per task,
uploads and imported data included) while the adapter watches the batch grow, and the SDK's
output modes (``lab`` with ``lastAnnotator``, ``kili``, raw, ``export_tasks``) on our documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taskwarden.lifecycle import Remote
from taskwarden.providers.base import Target
from taskwarden.providers.isahit import adapter as isahit
from taskwarden.simulator.isahit import IsahitAuth
from taskwarden.simulator.server import SimulatorServer

from ..providers.test_isahit import PROJECT, archive, call

ACCESS = {"access_id": "sim-access-id", "secret_key": "sim-secret-key"}
TASKS = "api/task-manager/tasks"
CREATE = "api/task-manager/batches/{batch_id}/tasks"


@pytest.fixture
def lab(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator; tasks created through the API finish after 10 s (sim time)."""
    server.isahit.configure(
        {**IsahitAuth().model_dump(), "api_pending_seconds": 4, "api_running_seconds": 6}
    )
    return server


@pytest.fixture
def sdk(lab: SimulatorServer) -> Any:
    from isahitlab.client import IsahitLab

    return IsahitLab(endpoint=lab.isahit_url, **ACCESS)


def batch_target(batch_id: str, **params: Any) -> Target:
    return Target(batch_id, {"project_id": PROJECT, "kind": "batch", **params})


def test_the_sdk_creates_a_batch_one_task_at_a_time_while_the_adapter_watches(
    lab: SimulatorServer, sdk: Any, tmp_path: Path
) -> None:
    """create_batch, then create_tasks three times (a URL, an uploaded file, imported data):
    the adapter sees 1/1 final and settles instead of ending, sees the batch grow, and ends
    only when it has settled; all three tasks are archived."""
    batch = sdk.create_batch(PROJECT, "street scenes", disable_progress_bar=True)
    target = batch_target(batch["_id"], settle_seconds=30)
    now = [0.0]

    async def watch(provider: isahit.IsahitProvider) -> list[str]:
        provider.clock = lambda: now[0]
        seen: list[str] = []

        async def check(after: float) -> Remote:
            now[0] += after
            observed = await provider.fetch_status(target)
            seen.append(observed.raw_status)
            return observed.remote

        await check(0)  # no tasks yet
        sdk.create_tasks(PROJECT, batch["_id"], [{"name": "a.jpg", "resources": ["https://img.test/a.jpg"]}],
                         disable_progress_bar=True)  # fmt: skip
        lab.clock.advance(11)
        assert await check(1) is Remote.RUNNING  # 1/1 final, but it settles
        image = tmp_path / "b.jpg"
        image.write_bytes(b"\xff\xd8 not really a jpeg")
        data = {"annotations": [], "image": {"width": 10, "height": 10}}
        sdk.create_tasks(PROJECT, batch["_id"], [{"name": "b.jpg", "resources": [str(image)]},
                                                 {"name": "c.jpg", "data": data}],
                         disable_progress_bar=True)  # fmt: skip
        await check(10)
        lab.clock.advance(11)
        while await check(10) is Remote.RUNNING:
            assert now[0] < 200
        return seen

    seen = call(lab, watch)
    assert seen[0] == "0/0 final"
    assert seen[1:3] == ["1/1 final, settling", "1/3 final"]
    assert seen[-2:] == ["3/3 final, settling", "3/3 final"]
    assert lab.stats.count(route=CREATE, task=batch["_id"]) == 3  # one POST per task
    got = archive(lab, target)
    names = sorted(json.loads(body)["name"] for name, body in got.items() if name != "batch.json")
    assert names == ["a.jpg", "b.jpg", "c.jpg"]
    docs = {json.loads(body)["name"]: json.loads(body) for name, body in got.items()
            if name != "batch.json"}  # fmt: skip
    assert docs["a.jpg"]["resources"] == ["https://img.test/a.jpg"]
    assert docs["b.jpg"]["resources"][0]["name"] == "b.jpg"
    assert docs["c.jpg"]["data"]["body"]["image"] == {"width": 10, "height": 10}


def test_the_sdk_refuses_a_duplicate_name_through_our_duplicate_check(
    lab: SimulatorServer, sdk: Any
) -> None:
    """tasks-duplicate answers the names already in the batch, which the SDK refuses."""
    batch = sdk.create_batch(PROJECT, "dupes", disable_progress_bar=True)
    sdk.create_tasks(PROJECT, batch["_id"], [{"name": "x.jpg"}], disable_progress_bar=True)
    with pytest.raises(Exception, match=r"already exist in your batch: x\.jpg"):
        sdk.create_tasks(PROJECT, batch["_id"], [{"name": "x.jpg"}], disable_progress_bar=True)


def test_the_sdks_last_annotator_is_the_one_the_adapter_archives(
    lab: SimulatorServer, sdk: Any
) -> None:
    """tasks(optional_fields=["lastAnnotator"]) in lab mode (it asks for jobs, then derives)
    gives the lastAnnotator the adapter writes into task.json."""
    task = lab.isahit.add_task(final_status="reviewed")
    (theirs,) = sdk.tasks(PROJECT, task_id_in=[task.task_id], optional_fields=["lastAnnotator"],
                          disable_progress_bar=True)  # fmt: skip
    target = Target(task.task_id, {"project_id": PROJECT, "optional_fields": ["lastAnnotator"]})
    ours = json.loads(archive(lab, target)["task.json"])
    assert theirs["lastAnnotator"] == ours["lastAnnotator"]
    assert theirs["lastAnnotator"].endswith("@sim.isahit.test")
    assert "jobs" not in theirs and "jobs" not in ours


def test_the_sdks_kili_mode_reads_our_documents(lab: SimulatorServer, sdk: Any) -> None:
    """compatibility_mode="kili" needs resources {id, name}, data.createdAt, data.user {id,
    name, email}, data.type, data.projectType, body.image and IAT polygons: all there."""
    task = lab.isahit.add_task(name="cross.jpg", final_status="reviewed", annotations=2)
    (kili,) = sdk.tasks(PROJECT, task_id_in=[task.task_id], compatibility_mode="kili",
                        optional_fields=["data"], disable_progress_bar=True)  # fmt: skip
    assert (kili["externalId"], kili["status"], kili["content"]) == (
        "cross.jpg",
        "REVIEWED",
        "cross.jpg",
    )
    label = kili["latestLabel"]
    assert label["author"]["email"].endswith("@sim.isahit.test")
    assert label["author"]["firstname"] == "Annotator"
    assert label["labelType"] == "REVIEW"
    # the SDK nests its per-sequence dict inside "annotations" (its own quirk)
    job = label["jsonResponse"]["OBJECT_DETECTION_JOB"]["annotations"]["OBJECT_DETECTION_JOB"]
    boxes = job["annotations"]
    assert len(boxes) == 2 and len(boxes[0]["boundingPoly"][0]["normalizedVertices"]) == 4


@pytest.mark.parametrize("form", ["lab", "kili", "yolo"])
def test_the_sdks_exports_run_on_our_documents(
    lab: SimulatorServer, sdk: Any, tmp_path: Path, form: str
) -> None:
    """export_tasks in the lab, kili and yolo formats runs to the end on a simulated batch."""
    batch = lab.isahit.add_batch(3, annotations=2)
    sdk.export_tasks(PROJECT, form, output_folder=str(tmp_path), batch_id_in=[batch.batch_id],
                     disable_progress_bar=True)  # fmt: skip
    assert any(tmp_path.rglob("*"))
