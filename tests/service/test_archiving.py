"""archive_watch on a real Redis, a file archive and a small platform double, without Celery:
a stale claim archives nothing; what follows a download is dated by the clock, not by ``now``."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

from taskwarden import archive, keys
from taskwarden.config.settings import Settings
from taskwarden.errors import ProviderUnavailable
from taskwarden.lifecycle import Decision, State
from taskwarden.providers.base import OutputRef
from taskwarden.service import archive_watch
from taskwarden.store import Claim, Commit, Store
from tests.service.doubles import ARCHIVE_LEASE, NOW, POLICIES, PROVIDER, Platform, Sent, register

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
