"""poll_batch on a real Redis and a small platform double, without Celery: how a batch's claims
are sorted (stale, archiving, live), and that one ``now`` dates every decision."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from taskwarden import keys
from taskwarden.circuit import Circuit, CircuitPolicy, observe
from taskwarden.errors import ProviderUnavailable
from taskwarden.lifecycle import Failure, Observation, Remote, State
from taskwarden.models import Watch
from taskwarden.providers.base import Target
from taskwarden.service import PollResult, poll_batch
from taskwarden.service.polling import check, extend_deadline
from taskwarden.store import Claim, Store
from tests.service.doubles import ARCHIVE_LEASE, NOW, POLICIES, PROVIDER, Platform, Sent, register

LEASE = 30.0  # dispatch's lease on a claim


def poll(
    store: Store, platform: Platform, claims: list[Claim], now: float, sent: Sent
) -> PollResult:
    return asyncio.run(
        poll_batch(
            store,
            platform,
            claims,
            policies=POLICIES,
            now=now,
            send_archive=sent.archives.append,
            send_abort=sent.aborts.append,
            record=sent.metrics.append,
        )
    )


def claim(store: Store, now: float) -> list[Claim]:
    """Claim every due watch of the double's, as dispatch does."""
    return store.claim_due(PROVIDER, now, 100, lease_until=now + LEASE)


def test_a_stale_fence_is_counted_stale_and_not_polled(store: Store) -> None:
    """A claim overtaken by a newer one (its lease expired and the watch was claimed again) is
    counted stale, and the platform is not asked about it; the live claim beside it is."""
    old_id, live_id = register(store, "old"), register(store, "live")
    overtaken = {c.watch_id: c for c in claim(store, NOW)}[old_id]
    store.reap_leases(NOW + LEASE + 1)  # both leases ran out: back on the schedule
    newer = {c.watch_id: c for c in claim(store, NOW + LEASE + 1)}
    platform, sent = Platform(), Sent()

    result = poll(store, platform, [overtaken, newer[live_id]], NOW + LEASE + 2, sent)

    assert result == PollResult(polled=1, committed=1, stale=1, archives=0)
    assert platform.checked == ["live"]
    old = store.get(old_id)
    assert old is not None and (old.polls, old.state) == (0, State.PENDING)
    assert sent.archives == [] and sent.aborts == []


def test_an_archiving_watch_gets_its_archive_sent_again_under_a_renewed_lease(
    store: Store,
) -> None:
    """A claimed watch that is archiving (its archive job was lost) is not polled: its archive
    job goes out again under this claim, with the archive lease renewed from ``now``."""
    wid = register(store, "done")
    platform, sent = Platform(), Sent()
    platform.status["done"] = Remote.SUCCEEDED
    first = claim(store, NOW)
    assert poll(store, platform, first, NOW, sent).archives == 1  # -> archiving
    assert sent.archives == first
    lost = NOW + ARCHIVE_LEASE + 1  # the archive job never ran; its lease ran out
    store.reap_leases(lost)
    again = claim(store, lost)
    sent.archives.clear()

    result = poll(store, platform, again, lost + 1, sent)

    assert result == PollResult(polled=0, committed=0, stale=0, archives=1)
    assert sent.archives == again and again[0].fence > first[0].fence
    assert platform.checked == ["done"]  # only the first poll asked the platform
    assert store.redis.zscore(keys.LEASES, wid) == lost + 1 + ARCHIVE_LEASE
    watch = store.get(wid)
    assert watch is not None and watch.state is State.ARCHIVING


def test_a_final_watch_is_stale(store: Store) -> None:
    """A poll message delivered again after its watch ended (same claim, same fence) is counted
    stale: the platform is not asked again and nothing is written or sent."""
    wid = register(store, "ended", archive=False)
    platform, sent = Platform(), Sent()
    platform.status["ended"] = Remote.SUCCEEDED
    claims = claim(store, NOW)
    assert poll(store, platform, claims, NOW, sent).committed == 1
    history = store.history(wid)

    result = poll(store, platform, claims, NOW + 5, sent)

    assert result == PollResult(polled=0, committed=0, stale=1, archives=0)
    assert platform.checked == ["ended"]
    assert store.history(wid) == history
    watch = store.get(wid)
    assert watch is not None and watch.state is State.SUCCEEDED and watch.polls == 1


def test_one_now_dates_every_decision_of_a_batch(store: Store) -> None:
    """Every watch of a batch is decided at the batch's ``now``: its next check is due at
    ``now`` plus the poll interval, and its history entry is dated ``now``."""
    ids = [register(store, f"r{i}") for i in range(3)]
    platform, sent = Platform(), Sent()
    at = NOW + 7.25

    result = poll(store, platform, claim(store, NOW), at, sent)

    assert result == PollResult(polled=3, committed=3, stale=0, archives=0)
    assert sorted(platform.checked) == ["r0", "r1", "r2"]
    for wid in ids:
        watch = store.get(wid)
        assert watch is not None and watch.state is State.RUNNING
        assert watch.next_poll_at == at + POLICIES.poll.initial
        assert store.history(wid)[-1]["at"] == at  # oldest first: registered, then this
    assert len(sent.metrics) == 1  # one metrics batch per poll batch
    assert store.due_count(PROVIDER, at + POLICIES.poll.initial) == 3


class Hanging(Platform):
    """A platform double that never answers about ``hung`` tasks; a check that says it waited
    ``waited`` seconds for a rate-limit slot pushes its deadline back by as long."""

    def __init__(self, hung: set[str], waited: float = 0.0, takes: float = 0.0) -> None:
        super().__init__()
        self.hung, self.waited, self.takes = hung, waited, takes

    async def fetch_status(self, target: Target) -> Observation:
        if target.remote_id in self.hung:
            await asyncio.Event().wait()  # for ever
        extend_deadline(self.waited)
        await asyncio.sleep(self.takes)
        return await super().fetch_status(target)


def test_a_check_past_its_deadline_is_a_retryable_failure_and_the_others_commit(
    store: Store,
) -> None:
    """A check that never ends is cut off at the check deadline: it commits as a retryable
    error (due again, its error recorded), and the batch's other checks commit as usual."""
    hung_id, ok_id = register(store, "hung"), register(store, "ok")
    platform, sent = Hanging({"hung"}), Sent()
    policies = replace(POLICIES, check_deadline=0.2)
    result = asyncio.run(
        poll_batch(
            store, platform, claim(store, NOW), policies=policies, now=NOW,
            send_archive=sent.archives.append, send_abort=sent.aborts.append,
            record=sent.metrics.append,
        )
    )  # fmt: skip
    assert result == PollResult(polled=2, committed=2, stale=0, archives=0)
    hung, ok = store.get(hung_id), store.get(ok_id)
    assert hung is not None and ok is not None
    assert (hung.state, hung.errors) == (State.PENDING, 1)
    assert hung.last_error == "no complete answer within the check deadline (0.2 s)"
    assert hung.next_poll_at is not None and store.due_count(PROVIDER) == 2
    assert (ok.state, ok.errors, ok.last_error) == (State.RUNNING, 0, None)
    assert store.in_flight(PROVIDER, NOW - LEASE) == 0  # both checks left the in-flight count


def test_a_rate_limit_wait_does_not_count_against_the_deadline() -> None:
    """A check that waited for its rate-limit slot longer than the deadline, and then took less
    than the deadline, ends with what the platform said."""
    platform = Hanging(set(), waited=0.5, takes=0.3)
    watch = Watch("w", PROVIDER, "slow", State.RUNNING, created_at=NOW, updated_at=NOW)
    seen = asyncio.run(check(platform, watch, deadline=0.1))
    assert isinstance(seen, Observation) and seen.remote is Remote.RUNNING
    assert asyncio.run(check(Hanging(set(), takes=0.3), watch, deadline=0.1)) == Failure(
        "no complete answer within the check deadline (0.1 s)",
        retryable=True,
        kind="ProviderUnavailable",
    )


class Down(Platform):
    """The double's platform during an outage: every check meets a 503."""

    async def fetch_status(self, target: Target) -> Observation:
        self.checked.append(target.remote_id)
        raise ProviderUnavailable("503 Service Unavailable", provider=self.name, status_code=503)


def test_an_open_circuit_checks_one_watch_of_a_batch_holds_it_and_leaves_the_rest_due(
    store: Store,
) -> None:
    """A batch claimed before its provider's circuit opened checks only its first watch (one
    more probe): its failure is held (count and deadline untouched, shown failing), the others
    are not asked about and stay due; the first answer closes the circuit."""
    policies = replace(POLICIES, circuit=CircuitPolicy(failures=3))
    ids = [register(store, name) for name in ("a", "b", "c")]
    opened = observe(Circuit(), [False] * 3, NOW, policies.circuit)
    store.change_circuit(PROVIDER, lambda c: (opened, None))
    down, sent = Down(), Sent()

    result = asyncio.run(
        poll_batch(store, down, claim(store, NOW), policies=policies, now=NOW + 1,
                   send_archive=sent.archives.append, send_abort=sent.aborts.append,
                   record=sent.metrics.append)
    )  # fmt: skip

    assert down.checked == ["a"] and result.polled == 1
    a, b, c = store.get_many(ids)
    assert a is not None and (a.errors, a.failing_since, a.polls) == (0, NOW + 1, 1)
    assert b is not None and c is not None and (b.polls, c.polls) == (0, 0)
    assert store.due_count(PROVIDER, NOW + 1) == 3
    assert store.failing_counts([PROVIDER]) == {PROVIDER: 1}

    up = Platform()
    probe = store.claim_due(PROVIDER, NOW + 2, 1, lease_until=NOW + 2 + LEASE)
    asyncio.run(
        poll_batch(store, up, probe, policies=policies, now=NOW + 2,
                   send_archive=sent.archives.append, send_abort=sent.aborts.append,
                   record=sent.metrics.append)
    )  # fmt: skip
    assert not store.circuits([PROVIDER])[PROVIDER].is_open


class Unavailable(Platform):
    """A platform that answers no status check."""

    async def fetch_status(self, target: Target) -> Observation:
        self.checked.append(target.remote_id)
        raise ProviderUnavailable("down for maintenance", provider=self.name)


def test_a_failed_check_records_its_error_kind_beside_its_message(store: Store) -> None:
    """A check that raised keeps the error-tree class it raised as ``last_error_kind`` beside
    ``last_error``; a check that then sees the task again leaves both as they were."""
    wid = register(store, "r0")
    sent = Sent()
    poll(store, Unavailable(), claim(store, NOW), NOW, sent)
    watch = store.get(wid)
    assert watch is not None and watch.errors == 1
    assert (watch.last_error_kind, watch.last_error) == (
        "ProviderUnavailable",
        "down for maintenance",
    )
    later = NOW + 60
    store.redis.zadd(keys.due(PROVIDER), {wid: 0})
    poll(store, Platform(), claim(store, later), later, sent)
    seen = store.get(wid)
    assert seen is not None and (seen.errors, seen.last_error_kind) == (0, "ProviderUnavailable")
