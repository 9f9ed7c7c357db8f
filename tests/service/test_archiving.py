"""archive_watch on a real Redis, a file archive and small platform doubles, without Celery:
a stale claim archives nothing; what follows a download is dated by the clock, not by ``now``;
an ``archive="final"`` watch archives what its failed, cancelled or timed-out task left behind
under the same exactly-once and retry rules, and lands on that final state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from taskwarden import archive, keys
from taskwarden.config.settings import Settings
from taskwarden.errors import ProviderUnavailable
from taskwarden.lifecycle import Decision, Remote, State
from taskwarden.providers.base import OutputRef
from taskwarden.service import archive_watch, poll_batch
from taskwarden.store import Claim, Commit, Store
from tests.service.doubles import (
    ARCHIVE_LEASE,
    NOW,
    POLICIES,
    PROVIDER,
    DiagnosedPlatform,
    Platform,
    Sent,
    register,
)

DONE = NOW + 3600.0  # the clock when the download ends: an hour after the job started


def archiving(store: Store, remote_id: str) -> Claim:
    """A watch of the double's, claimed and moved to ``archiving`` as its last poll would."""
    wid = register(store, remote_id)
    (claim,) = store.claim_due(PROVIDER, NOW, 1, lease_until=NOW + 30)
    watch = store.get(wid)
    assert watch is not None
    decision = Decision(State.ARCHIVING, "SUCCEEDED", 1.0, None, 0, None, note="remote SUCCEEDED")
    lease = NOW + ARCHIVE_LEASE
    assert store.commit(Commit(claim, decision, NOW, previous=watch.state, lease_until=lease))
    return claim


def run(store: Store, platform: Platform, claim: Claim, tmp_path: Path, sent: Sent) -> State | None:
    settings = Settings(archive_url=(tmp_path / "archive").as_uri())
    return asyncio.run(
        archive_watch(
            store,
            {PROVIDER: platform},
            archive.open_store(settings),
            claim,
            policies=POLICIES,
            now=NOW,
            record=sent.metrics.append,
            clock=lambda: DONE,
        )
    )


def test_a_stale_claim_archives_nothing(store: Store, tmp_path: Path) -> None:
    """An archive job whose claim was overtaken (a newer poll re-sent the archive) does not ask
    the platform for outputs, and writes nothing."""
    claim = archiving(store, "late")
    platform, sent = Platform(), Sent()
    assert run(store, platform, Claim(claim.watch_id, claim.fence - 1), tmp_path, sent) is None
    assert platform.listed == [] and sent.metrics == []
    watch = store.get(claim.watch_id)
    assert watch is not None and watch.state is State.ARCHIVING


def test_an_archived_watch_succeeds_dated_by_the_clock(store: Store, tmp_path: Path) -> None:
    """A finished archive run writes the outputs and the manifest (dated ``now``, when the run
    began), and commits ``succeeded`` at the clock's time after the download, lease released."""
    claim = archiving(store, "ok")
    platform, sent = Platform(), Sent()
    platform.outputs["ok"] = [OutputRef("result.json", "inline", content=b'{"ok": true}')]

    assert run(store, platform, claim, tmp_path, sent) is State.SUCCEEDED

    watch = store.get(claim.watch_id)
    assert watch is not None and watch.state is State.SUCCEEDED
    assert [o["name"] for o in watch.outputs] == ["result.json"]
    assert watch.finished_at == DONE and store.history(watch.id)[-1]["at"] == DONE
    assert store.redis.zscore(keys.LEASES, watch.id) is None
    manifest = json.loads((tmp_path / "archive" / PROVIDER / "ok" / "manifest.json").read_text())
    assert datetime.fromisoformat(manifest["archived_at"]).timestamp() == NOW
    assert len(sent.metrics) == 1


def test_a_failed_archive_run_is_retried_from_the_clock(store: Store, tmp_path: Path) -> None:
    """A retryable failure at the end of a long run schedules the retry from the clock's time
    after the download, not from when the run began, and keeps the watch archiving."""
    claim = archiving(store, "flaky")
    platform, sent = Platform(), Sent()
    platform.outputs["flaky"] = ProviderUnavailable("listing failed", provider=PROVIDER)

    assert run(store, platform, claim, tmp_path, sent) is State.ARCHIVING

    watch = store.get(claim.watch_id)
    assert watch is not None and watch.state is State.ARCHIVING and watch.errors == 1
    retry = POLICIES.retries[PROVIDER]
    assert watch.next_poll_at == DONE + retry.delay(1, POLICIES.jitter())
    assert watch.failing_since == DONE
    assert store.due_count(PROVIDER, DONE) == 0  # due at the retry, not before
    assert store.redis.zscore(keys.LEASES, watch.id) is None


# --- what a task that did not succeed leaves behind (archive="final") -------------------------

LOG = OutputRef("log.txt", "double:log", content=b"Traceback (most recent call last):\n  boom\n")


def poll_once(store: Store, platform: Platform, now: float, sent: Sent) -> None:
    """Claim every due watch of the double's and poll them at ``now``, as dispatch and a poll
    worker do."""
    claims = store.claim_due(PROVIDER, now, 100, lease_until=now + 30)
    asyncio.run(
        poll_batch(
            store, platform, claims, policies=POLICIES, now=now, send_archive=sent.archives.append,
            send_abort=sent.aborts.append, record=sent.metrics.append,
        )
    )  # fmt: skip


def archive_at(
    store: Store, platform: Platform, claim: Claim, tmp_path: Path, clock: float
) -> State | None:
    settings = Settings(archive_url=(tmp_path / "archive").as_uri())
    return asyncio.run(
        archive_watch(
            store, {PROVIDER: platform}, archive.open_store(settings), claim, policies=POLICIES,
            now=clock, record=lambda _: None, clock=lambda: clock,
        )
    )  # fmt: skip


def failed_task(platform: DiagnosedPlatform, remote_id: str) -> None:
    platform.status[remote_id] = Remote.FAILED
    platform.messages[remote_id] = "band 4 missing"
    platform.diagnostics[remote_id] = [LOG]


def manifest_of(tmp_path: Path, *folders: str) -> dict[str, Any]:
    path = tmp_path.joinpath("archive", PROVIDER, *folders, "manifest.json")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_a_failed_final_watch_archives_its_diagnostics_then_ends_failed(
    store: Store, tmp_path: Path
) -> None:
    """A failure goes through archiving (the watch keeps the state it lands on), the archive
    keeps what list_diagnostics lists (never list_outputs), the manifest says `failed`, and the
    watch ends failed with the platform's words as last_error."""
    wid = register(store, "bad", archive="final")
    platform, sent = DiagnosedPlatform(), Sent()
    failed_task(platform, "bad")
    poll_once(store, platform, NOW, sent)
    watch = store.get(wid)
    assert watch is not None and (watch.state, watch.outcome) == (State.ARCHIVING, State.FAILED)
    (claim,) = sent.archives

    assert archive_at(store, platform, claim, tmp_path, DONE) is State.FAILED

    watch = store.get(wid)
    assert watch is not None and watch.state is State.FAILED
    assert (watch.last_error, watch.finished_at) == ("band 4 missing", DONE)
    assert [o["name"] for o in watch.outputs] == ["log.txt"]
    assert watch.manifest == f"{PROVIDER}/bad/manifest.json"
    assert (platform.diagnosed, platform.listed) == (["bad"], [])
    manifest = manifest_of(tmp_path, "bad")
    assert (manifest["final_state"], manifest["final_status"]) == ("failed", "FAILED")
    assert (tmp_path / "archive" / PROVIDER / "bad" / "log.txt").read_bytes() == LOG.content
    assert [(h["from"], h["to"], h["note"]) for h in store.history(wid)][1:] == [
        ("pending", "archiving", "remote FAILED: band 4 missing"),
        ("archiving", "failed", "archived what the failed task left behind: 1 file"),
    ]


def test_a_duplicate_delivery_of_a_failure_archive_makes_one_archive(
    store: Store, tmp_path: Path
) -> None:
    """Two deliveries of the same archive job at once: one runs (the run token), the other
    does nothing; a third after the end is stale. Diagnostics are listed once."""
    wid = register(store, "twice", archive="final")
    platform, sent = DiagnosedPlatform(), Sent()
    failed_task(platform, "twice")
    poll_once(store, platform, NOW, sent)
    (claim,) = sent.archives
    settings = Settings(archive_url=(tmp_path / "archive").as_uri())
    opened = archive.open_store(settings)

    async def both() -> list[State | None]:
        def one() -> Coroutine[Any, Any, State | None]:
            return archive_watch(store, {PROVIDER: platform}, opened, claim, policies=POLICIES,
                                 now=DONE, record=lambda _: None, clock=lambda: DONE)  # fmt: skip

        return list(await asyncio.gather(one(), one()))

    assert sorted(asyncio.run(both()), key=str) == [None, State.FAILED]
    assert archive_at(store, platform, claim, tmp_path, DONE + 1) is None
    assert platform.diagnosed == ["twice"]
    watch = store.get(wid)
    assert watch is not None and watch.state is State.FAILED and len(watch.outputs) == 1


def test_a_storage_failure_retries_then_errors_and_a_retry_archives_anew(
    store: Store, tmp_path: Path
) -> None:
    """The store refusing a diagnostics write is retried under the watch's policy (last_error
    keeps the platform's words; each attempt is noted), then ends in error saying how the task
    ended; `taskwarden retry` re-arms it, and its next end archives and lands on failed."""
    wid = register(store, "squat", archive="final", retry={"maximum_attempts": 2})
    platform, sent = DiagnosedPlatform(), Sent()
    failed_task(platform, "squat")
    squatter = tmp_path / "archive" / PROVIDER / "squat" / "log.txt" / "squatter"
    squatter.mkdir(parents=True)  # a directory where the log goes: the store refuses the write
    poll_once(store, platform, NOW, sent)

    assert archive_at(store, platform, sent.archives[0], tmp_path, DONE) is State.ARCHIVING
    watch = store.get(wid)
    assert watch is not None and (watch.errors, watch.last_error) == (1, "band 4 missing")
    assert store.history(wid)[-1]["note"].startswith("archive attempt 1 failed, to be retried")
    assert watch.next_poll_at is not None
    (again,) = store.claim_due(PROVIDER, watch.next_poll_at, 10, lease_until=DONE + 900)

    assert archive_at(store, platform, again, tmp_path, DONE + 60) is State.ERROR
    watch = store.get(wid)
    assert watch is not None and watch.last_error is not None and "log.txt" in watch.last_error
    note = store.history(wid)[-1]["note"]
    assert note.startswith("archive failed after 2 attempts") and "(the task ended failed)" in note
    assert not (tmp_path / "archive" / PROVIDER / "squat" / "manifest.json").exists()

    squatter.rmdir()
    squatter.parent.rmdir()
    store.rearm(wid, DONE + 120)
    sent = Sent()
    poll_once(store, platform, DONE + 120, sent)
    assert archive_at(store, platform, sent.archives[0], tmp_path, DONE + 130) is State.FAILED
    watch = store.get(wid)
    assert watch is not None and (watch.state, watch.last_error) == (State.FAILED, "band 4 missing")
    assert manifest_of(tmp_path, "squat")["final_state"] == "failed"


def test_a_provider_without_diagnostics_archives_nothing_and_says_so(
    store: Store, tmp_path: Path
) -> None:
    """A failed final watch of a provider with no list_diagnostics lands on failed without an
    archive run: nothing listed, nothing written, and the history says why."""
    wid = register(store, "plain", archive="final")
    platform, sent = Platform(), Sent()
    platform.status["plain"] = Remote.FAILED
    poll_once(store, platform, NOW, sent)

    assert archive_at(store, platform, sent.archives[0], tmp_path, DONE) is State.FAILED

    watch = store.get(wid)
    assert watch is not None and (watch.state, watch.manifest, watch.outputs) == (
        State.FAILED, None, []
    )  # fmt: skip
    assert platform.listed == [] and list((tmp_path / "archive").rglob("*")) == []
    assert "nothing archived" in store.history(wid)[-1]["note"]


def test_a_time_out_snapshot_has_its_own_folder_and_a_retry_can_still_archive_outputs(
    store: Store, tmp_path: Path
) -> None:
    """A watch timing out with abort_on_timeout sends its abort and its archive together; the
    snapshot lands under timed_out/<deadline>/ with a `timed_out` manifest, so that once
    re-armed and succeeded its outputs still archive into the task's own folder."""
    wid = register(store, "slow", archive="final", timeout=10, abort_on_timeout=True)
    platform, sent = DiagnosedPlatform(), Sent()
    platform.diagnostics["slow"] = [LOG]
    poll_once(store, platform, NOW + 20, sent)
    assert sent.aborts == [wid] and len(sent.archives) == 1

    assert archive_at(store, platform, sent.archives[0], tmp_path, DONE) is State.TIMED_OUT
    watch = store.get(wid)
    assert watch is not None and watch.manifest is not None
    snapshot = watch.manifest.split("/")[2:4]
    assert snapshot == ["timed_out", "20231114T221329.000Z"]  # the deadline: NOW - 1 + 10
    assert manifest_of(tmp_path, "slow", *snapshot)["final_state"] == "timed_out"

    store.rearm(wid, DONE + 100)
    platform.status["slow"] = Remote.SUCCEEDED
    platform.outputs["slow"] = [OutputRef("result.json", "double:result", content=b"{}")]
    sent = Sent()
    poll_once(store, platform, DONE + 100, sent)
    assert archive_at(store, platform, sent.archives[0], tmp_path, DONE + 110) is State.SUCCEEDED
    watch = store.get(wid)
    assert watch is not None and [o["name"] for o in watch.outputs] == ["result.json"]
    assert manifest_of(tmp_path, "slow")["final_state"] == "succeeded"
    assert manifest_of(tmp_path, "slow", *snapshot)["outputs"][0]["name"] == "log.txt"
