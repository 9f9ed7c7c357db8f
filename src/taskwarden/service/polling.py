"""What a worker does with a job: check a batch of watches, archive one, abort one.

A :class:`Runtime` holds what a worker process builds once (settings, store, one HTTP client,
the provider adapters, the archive store, an event loop). The service functions below take it
and ids; the Celery tasks in :mod:`taskwarden.tasks` are thin wrappers around them.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import redis.asyncio as aioredis

from taskwarden import archive, logs, metrics, net, webhooks
from taskwarden.config import Settings
from taskwarden.errors import PermanentError, RetryableError, TaskwardenError
from taskwarden.lifecycle import (
    INTERNAL_ERROR,
    Decision,
    Failure,
    Observation,
    RetryPolicy,
    State,
    decide,
    failure_decision,
)
from taskwarden.models import Watch
from taskwarden.net import ShardedTransport, build_client
from taskwarden.providers import factories
from taskwarden.providers.base import Provider, Target
from taskwarden.store import Claim, Commit, Limit, RateLimiter, Store

T = TypeVar("T")
SendArchive = Callable[[Claim], None]
SendAbort = Callable[[str], None]

log = logs.get("taskwarden.worker")


class Runtime:
    """Per-process clients, built once (``worker_process_init``), closed at process exit."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.store = Store.from_url(redis_url, history_limit=settings.history_limit)
        self.loop = asyncio.new_event_loop()
        # one set of connection pools; a client per provider, so each has its own rate limit
        transport = ShardedTransport(
            settings.http.max_connections, settings.http.connections_per_pool
        )
        self.limiter = RateLimiter(
            aioredis.Redis.from_url(redis_url),
            {name: Limit(lim.rate, lim.burst) for name, lim in settings.rate_limits.items()},
        )
        self.http_errors = metrics.HttpErrors()
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.providers: dict[str, Provider] = {}
        for name, factory in factories().items():
            hook = self._rate_limited(name) if self.limiter.limited(name) else None
            client = build_client(settings.http, transport=transport, before_request=hook)
            net.Guard(net.policy_for(settings, name)).install(client)  # before the rate limit
            self.http_errors.install(client, name)
            self.clients[name] = client
            self.providers[name] = factory(settings, client)
        self.archive = archive.open_store(settings)
        self.poll_policy = settings.poll_policy()
        # each provider's policy, resolved once; a watch's own overrides go over it
        self.retry_policies = {name: settings.retry_policy(name) for name in self.providers}
        self.rng = random.Random()
        self.webhooks = webhooks.Sender(settings, self.store)

    def _rate_limited(self, provider: str) -> Callable[[httpx.Request], Awaitable[None]]:
        async def wait_for_slot(request: httpx.Request) -> None:
            await self.limiter.acquire(provider)

        return wait_for_slot

    def retry_policy(self, watch: Watch) -> RetryPolicy:
        """The retry policy of ``watch``: its provider's, under its own ``retry``."""
        return self.retry_policies[watch.provider].overridden(watch.retry)

    def flush_metrics(self, seen: metrics.Batch) -> None:
        """Add ``seen``, and the waits and HTTP errors since the last flush, to the totals."""
        seen.rate_limit_waits(self.limiter.drain())
        seen.http_errors(self.http_errors.drain())
        self.store.add_metrics(seen)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        for client in self.clients.values():
            self.run(client.aclose())
        self.run(self.limiter.aclose())
        self.run(self.webhooks.aclose())
        self.run(archive.settle())  # obstore needs the loop to breathe before it closes
        self.loop.close()
        self.store.close()


def target_of(watch: Watch) -> Target:
    return Target(remote_id=watch.remote_id, params=watch.params)


@dataclass
class PollResult:
    polled: int = 0
    committed: int = 0
    stale: int = 0
    archives: int = 0


async def _check(provider: Provider, watch: Watch) -> Observation | Failure:
    try:
        return await provider.fetch_status(target_of(watch))
    except (RetryableError, PermanentError) as exc:
        return failure_of(exc)
    except Exception as exc:  # a provider bug must not kill the batch; retries bound it
        log.exception("poll.provider_bug", provider=provider.name, remote_id=watch.remote_id)
        return Failure(
            f"internal error: {type(exc).__name__}: {exc}", retryable=True, kind=INTERNAL_ERROR
        )


def failure_of(exc: TaskwardenError, message: str | None = None) -> Failure:
    """What a check or an archive run that raised ``exc`` came to (``message``: its wording)."""
    return Failure(
        str(exc) if message is None else message,
        retryable=isinstance(exc, RetryableError),
        retry_after=exc.retry_after if isinstance(exc, RetryableError) else None,
        kind=type(exc).__name__,
    )


def poll_batch(
    rt: Runtime,
    provider_name: str,
    claims: Sequence[Claim],
    send_archive: SendArchive,
    send_abort: SendAbort,
) -> PollResult:
    """Check each claimed watch once, record what was seen, schedule the next check."""
    result = PollResult()
    watches = rt.store.get_many([c.watch_id for c in claims])
    live: list[tuple[Claim, Watch]] = []
    for claim, watch in zip(claims, watches, strict=True):
        if watch is None or watch.fence != claim.fence or watch.state.final:
            result.stale += 1  # overtaken by a newer claim, a cancel, or already final
        elif watch.state is State.ARCHIVING:
            # its archive job was lost or is due for a retry: send it again under this claim
            until = time.time() + rt.settings.archive_lease_seconds
            if rt.store.renew_lease(claim, until):
                send_archive(claim)
                result.archives += 1
        else:
            live.append((claim, watch))
    if not live:
        return result
    provider = rt.providers[provider_name]
    seen = rt.run(_check_all(provider, [w for _, w in live], rt.settings.poll_concurrency))
    commits: list[Commit] = []
    abort_if_timed_out: set[str] = set()
    seen_metrics = metrics.Batch()
    for (claim, watch), (observed, duration) in zip(live, seen, strict=True):
        seen_metrics.poll(provider_name, _outcome(observed), duration)
        if watch.abort_on_timeout:
            abort_if_timed_out.add(watch.id)
        now = time.time()
        decision = decide(
            watch.view(), observed, now, rt.poll_policy, rt.retry_policy(watch), rt.rng.random()
        )
        extra: dict[str, object] = {
            "polls": watch.polls + 1,
            "failing_since": decision.failing_since,
        }
        if isinstance(observed, Observation) and observed.name:
            extra["name"] = observed.name
        lease = now + rt.settings.archive_lease_seconds if decision.archive else None
        commits.append(
            Commit(claim, decision, now, previous=watch.state, lease_until=lease, extra=extra)
        )
        _log_poll(watch, observed, decision, duration)
    result.polled = len(commits)
    for commit, ok in zip(commits, rt.store.commit_many(commits), strict=True):
        if not ok:
            result.stale += 1
            continue
        result.committed += 1
        if commit.decision.archive:
            send_archive(commit.claim)
            result.archives += 1
        elif (
            commit.decision.state is State.TIMED_OUT and commit.claim.watch_id in abort_if_timed_out
        ):
            send_abort(commit.claim.watch_id)
    rt.flush_metrics(seen_metrics)
    return result


def _outcome(observed: Observation | Failure) -> str:
    if isinstance(observed, Observation):
        return "ok"
    return "retryable_error" if observed.retryable else "permanent_error"


async def _check_all(
    provider: Provider, watches: Sequence[Watch], concurrency: int
) -> list[tuple[Observation | Failure, float]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(watch: Watch) -> tuple[Observation | Failure, float]:
        async with gate:
            started = time.perf_counter()
            observed = await _check(provider, watch)
            return observed, time.perf_counter() - started

    return await asyncio.gather(*(one(w) for w in watches))


def _log_poll(
    watch: Watch, observed: Observation | Failure, decision: Decision, duration: float
) -> None:
    log.info(
        "poll.done",
        watch_id=watch.id,
        provider=watch.provider,
        remote_id=watch.remote_id,
        outcome="error" if isinstance(observed, Failure) else "ok",
        raw_status=decision.raw_status,
        state=str(decision.state),
        progress=decision.progress,
        error=observed.message if isinstance(observed, Failure) else None,
        next_in_s=None
        if decision.next_poll_at is None
        else round(decision.next_poll_at - time.time(), 2),
        duration_ms=round(duration * 1000, 1),
    )


def archive_watch(rt: Runtime, claim: Claim) -> State | None:
    """Archive the outputs of a succeeded watch; return the state it ended in (None if stale)."""
    watch = rt.store.get(claim.watch_id)
    if watch is None or watch.fence != claim.fence or watch.state is not State.ARCHIVING:
        log.info("archive.stale", watch_id=claim.watch_id)
        return None
    started = time.perf_counter()
    provider = rt.providers[watch.provider]
    wlog = log.bind(watch_id=watch.id, provider=watch.provider, remote_id=watch.remote_id)
    # A redelivered message (the broker's visibility timeout is shorter than a long download)
    # must not start a second download beside a live one: the run token says one is under way.
    run = secrets.token_hex(8)
    if not rt.store.start_run(watch.id, run, rt.settings.archive_lease_seconds / 2):
        wlog.info("archive.busy")
        return None
    base = Decision.unchanged(watch.view())
    try:
        manifest = rt.run(_archive_with_lease(rt, provider, watch, claim, run))
    except TaskwardenError as exc:
        decision = _archive_failed(rt, watch, base, exc)
        kept: dict[str, object] = {"failing_since": decision.failing_since}
        rt.store.commit(Commit(claim, decision, time.time(), previous=watch.state, extra=kept))
        rt.store.end_run(watch.id, run)
        outcome = "failed" if decision.state is State.ERROR else "retrying"
        _archive_metrics(rt, watch.provider, outcome, started, 0)
        wlog.warning(
            "archive.failed",
            error=str(exc),
            retryable=isinstance(exc, RetryableError),
            state=str(decision.state),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return decision.state
    outputs = [
        {"name": o.name, "key": o.key, "size": o.size, "sha256": o.sha256} for o in manifest.outputs
    ]
    total = manifest.total_bytes
    decision = replace(
        base, state=State.SUCCEEDED, errors=0, note=f"archived {len(outputs)} outputs"
    )
    manifest_at = archive.manifest_key(rt.archive, watch.provider, watch.remote_id)
    extra: dict[str, object] = {"outputs": outputs, "manifest": manifest_at}
    committed = rt.store.commit(
        Commit(claim, decision, time.time(), previous=watch.state, extra=extra)
    )
    rt.store.end_run(watch.id, run)
    _archive_metrics(rt, watch.provider, "succeeded", started, total)
    wlog.info(
        "archive.done",
        outputs=len(outputs),
        bytes=total,
        committed=committed,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return State.SUCCEEDED if committed else None


def _archive_metrics(rt: Runtime, provider: str, outcome: str, started: float, size: int) -> None:
    seen = metrics.Batch()
    seen.archive(provider, outcome, time.perf_counter() - started, size)
    rt.flush_metrics(seen)


def _archive_failed(rt: Runtime, watch: Watch, base: Decision, exc: TaskwardenError) -> Decision:
    failure = failure_of(exc, f"archive: {exc}")
    decision = failure_decision(
        watch.view(),
        failure,
        time.time(),
        rt.retry_policy(watch),
        rt.rng.random(),
        gave_up=f"archive failed after {{attempts}} attempts{{over}}: {exc}",
    )
    if decision.state is State.ERROR and not failure.retryable:
        return replace(decision, note=f"archive failed: {exc}")
    return decision


async def _archive_with_lease(
    rt: Runtime, provider: Provider, watch: Watch, claim: Claim, run: str
) -> archive.Manifest:
    """Archive, renewing the lease and the run token while the download runs, so no one
    takes the watch over and no duplicate run starts beside this one."""
    lease = rt.settings.archive_lease_seconds

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            await asyncio.to_thread(rt.store.renew_lease, claim, time.time() + lease)
            await asyncio.to_thread(rt.store.renew_run, watch.id, run, lease / 2)

    renewer = asyncio.ensure_future(keep_alive())
    try:
        return await archive.archive_outputs(
            rt.archive,
            provider,
            target_of(watch),
            watch_id=watch.id,
            provider_name=watch.provider,
            final_status=watch.raw_status or "",
            now=time.time(),
            chunk_size=rt.settings.archive_chunk_size,
            max_bytes=rt.settings.max_output_bytes,
        )
    finally:
        renewer.cancel()


def abort_remote(rt: Runtime, watch_id: str) -> None:
    """Ask the platform to stop the remote task of a watch."""
    watch = rt.store.get(watch_id)
    if watch is None:
        return
    wlog = log.bind(watch_id=watch.id, provider=watch.provider, remote_id=watch.remote_id)
    try:
        rt.run(rt.providers[watch.provider].abort(target_of(watch)))
    except TaskwardenError as exc:
        rt.store.note(watch.id, time.time(), f"abort failed: {exc}")
        wlog.warning("abort.failed", error=str(exc))
        return
    rt.store.note(watch.id, time.time(), "abort sent to the platform")
    wlog.info("abort.sent")
