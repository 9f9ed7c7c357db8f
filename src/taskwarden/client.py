"""A Python client for the taskwarden HTTP API: register, read, cancel, retry and wait.

    from taskwarden import Client

    with Client.from_settings() as tw:
        watch = tw.track("geobox", "3f2c...e1", labels={"team": "maps"})
        final = tw.wait(watch["id"], timeout=3600)   # a progress bar on stderr

``wait`` reads the warden's recorded state, never the platform: a thousand scripts waiting cost
the platform nothing beyond the warden's own polling. Errors form a small tree:

    ApiError                 the API answered with an error (``status``, ``detail``)
    ├── Unauthorized         401: no token, or the wrong one
    ├── NotFound             404: no such watch
    ├── Conflict             409: e.g. retrying a watch that is not in error/timed_out
    └── ApiUnavailable       the API could not be reached (``status`` is None)
    WaitTimeout              (a TimeoutError) ``wait`` gave up before the watch ended
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from taskwarden.errors import TaskwardenError
from taskwarden.lifecycle import FINAL_STATES, State

WatchDict = dict[str, Any]
FINAL = frozenset(str(s) for s in FINAL_STATES)
PAGE_MAX = 500  # the API's largest page
BATCH_MAX = 1000  # the API's largest registration batch


class ApiError(TaskwardenError):
    """The API refused a request; ``status`` is the HTTP status, ``detail`` its reason."""

    def __init__(self, status: int | None, detail: str, *, url: str = "") -> None:
        where = f" ({url})" if url else ""
        prefix = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{detail}{where}", status_code=status)
        self.status = status
        self.detail = detail


class Unauthorized(ApiError):
    """401: the request carried no bearer token, or not the API's."""


class NotFound(ApiError):
    """404: no watch with that id (or provider:remote_id)."""


class Conflict(ApiError):
    """409: the watch is not in a state that allows the request."""


class ApiUnavailable(ApiError):
    """The API did not answer (connection refused, timeout)."""


class WaitTimeout(TimeoutError):
    """``wait`` gave up before the watch reached a final state; ``watch`` is its last view."""

    def __init__(self, watch: WatchDict, timeout: float) -> None:
        progress = watch.get("progress")
        shown = "unknown" if progress is None else f"{progress * 100:.0f}%"
        raw = f", remote status {watch['raw_status']!r}" if watch.get("raw_status") else ""
        super().__init__(
            f"watch {watch['id']} ({watch['provider']}:{watch['remote_id']}) did not end within "
            f"{timeout:g}s: still {watch['state']}{raw}, progress {shown}"
        )
        self.watch = watch
        self.timeout = timeout


_ERRORS: dict[int, type[ApiError]] = {401: Unauthorized, 404: NotFound, 409: Conflict}


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500] or response.reason_phrase
    if isinstance(detail, list):  # FastAPI's request validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', []))}: {err.get('msg')}" for err in detail
        )
    return str(detail)


def _seconds(value: float | datetime | None) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return value


class Client:
    """A synchronous client of one taskwarden API. Use it as a context manager, or ``close()``.

    ``url`` defaults to ``http://{TASKWARDEN_API__HOST}:{TASKWARDEN_API__PORT}`` and ``token``
    to ``TASKWARDEN_API__TOKEN`` or the token the API generated under the data directory.
    """

    OUTAGE_GRACE = 60.0  # seconds `wait` rides out an API that stopped answering

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        if url is None or token is None:
            default_url, default_token = _defaults()
            url = url or default_url
            token = token if token is not None else default_token
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls) -> Client:
        """A client of the API that this machine's ``TASKWARDEN_*`` settings describe."""
        url, token = _defaults()
        return cls(url, token)

    # --- the calls ------------------------------------------------------------------------

    def track(self, provider: str, remote_id: str, **options: Any) -> WatchDict:
        """Watch a remote task; idempotent (the same task is one watch). ``options`` are the
        registration's other fields: labels, params, timeout, archive (``"success"``, ``"final"``
        or False), abort_on_timeout, retention (seconds kept once final)... The watch returned
        (and :meth:`get`'s) carries the platform's own ``remote_created_at``/
        ``remote_started_at``/``remote_ended_at`` and ``details`` once a check has reported them."""
        body = {"provider": provider, "remote_id": remote_id, **options}
        watch: WatchDict = self._call("POST", "/v1/watches", json=body)["watch"]
        return watch

    def track_many(self, registrations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Watch many remote tasks (each a dict with ``provider``, ``remote_id`` and the
        options of :meth:`track`), sent :data:`BATCH_MAX` a request. Returns one result per
        registration, in order: ``{"status": "created" | "exists" | "refused", "watch_id": ...,
        "error": ...}``; a refused one does not stop the others."""
        results: list[dict[str, Any]] = []
        batch: list[dict[str, Any]] = []
        for reg in registrations:
            batch.append(reg)
            if len(batch) == BATCH_MAX:
                results += self._call("POST", "/v1/watches:batch", json=batch)["results"]
                batch = []
        if batch:
            results += self._call("POST", "/v1/watches:batch", json=batch)["results"]
        return results

    def get(self, ref: str) -> WatchDict:
        """One watch by id or ``provider:remote_id``, with its ``history`` (oldest first)."""
        found: WatchDict = self._call("GET", f"/v1/watches/{_ref(ref)}")
        return found

    def list(
        self,
        *,
        state: str | None = None,
        provider: str | None = None,
        labels: dict[str, str] | None = None,
        q: str | None = None,
        created_after: float | datetime | None = None,
        created_before: float | datetime | None = None,
        updated_after: float | datetime | None = None,
        updated_before: float | datetime | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> list[WatchDict]:
        """Watches matching every filter given, following the API's pages; at most ``limit``
        of them (all when None). Times are unix seconds or aware datetimes."""
        return list(
            self.iter(
                state=state,
                provider=provider,
                labels=labels,
                q=q,
                created_after=created_after,
                created_before=created_before,
                updated_after=updated_after,
                updated_before=updated_before,
                sort=sort,
                limit=limit,
                cursor=cursor,
            )
        )

    def iter(
        self,
        *,
        labels: dict[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Any,
    ) -> Iterator[WatchDict]:
        """Like ``list``, one page at a time as they are needed."""
        params: list[tuple[str, str]] = []
        for key, value in filters.items():
            value = _seconds(value)
            if value is not None:
                params.append((key, str(value)))
        params += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        left = limit
        while left is None or left > 0:
            page = PAGE_MAX if left is None else min(left, PAGE_MAX)
            query = [*params, ("limit", str(page))] + ([("cursor", cursor)] if cursor else [])
            body = self._call("GET", "/v1/watches", params=query)
            items: list[WatchDict] = body["items"][:page]
            yield from items
            if left is not None:
                left -= len(items)
            cursor = body.get("next_cursor")
            if not cursor:  # a short page with a cursor is a sparse filter: more to scan
                return

    def cancel(self, ref: str, abort: bool = False) -> WatchDict:
        """Stop watching; ``abort`` also asks the platform to abort the remote task. Returns the
        watch (a watch that had already ended is returned unchanged; with ``abort``, that is
        a :class:`Conflict` and nothing is sent)."""
        watch: WatchDict = self._call(
            "POST", f"/v1/watches/{_ref(ref)}/cancel", json={"abort": abort}
        )["watch"]
        return watch

    def forget(self, ref: str, force: bool = False) -> dict[str, Any]:
        """Remove a watch from the warden now (its archive stays); returns its id and the state
        it was in. A watch that is not final raises :class:`Conflict` unless ``force``."""
        params = {"force": "true"} if force else None
        done: dict[str, Any] = self._call("DELETE", f"/v1/watches/{_ref(ref)}", params=params)
        return done

    def retry(self, ref: str) -> WatchDict:
        """Re-arm a watch that ended in ``error`` or ``timed_out`` (``Conflict`` otherwise)."""
        watch: WatchDict = self._call("POST", f"/v1/watches/{_ref(ref)}/retry")["watch"]
        return watch

    def cancel_matching(
        self, *, abort: bool = False, dry_run: bool = False, **filters: Any
    ) -> dict[str, Any]:
        """Cancel every watch the filters match (those of :meth:`list`: state, provider, labels,
        q, created/updated after/before), with ``abort`` the remote tasks too, following the
        API's batches (``POST /v1/watches:cancel``). Returns the tally: ``matched``,
        ``changed``, ``ids`` (those cancelled; on a ``dry_run``, those that would be) and
        ``skipped`` by state. Watches already ended are skipped, so a repeat is harmless."""
        return self._bulk("cancel", {"abort": abort, "dry_run": dry_run}, filters)

    def retry_matching(self, *, dry_run: bool = False, **filters: Any) -> dict[str, Any]:
        """Re-arm every ``error`` and ``timed_out`` watch the filters match (as
        :meth:`cancel_matching`, through ``POST /v1/watches:retry``)."""
        return self._bulk("retry", {"dry_run": dry_run}, filters)

    def _bulk(self, action: str, body: dict[str, Any], filters: dict[str, Any]) -> dict[str, Any]:
        labels = filters.pop("labels", None) or {}
        body = {**body, "label": [f"{k}={v}" for k, v in labels.items()], "limit": PAGE_MAX}
        body |= {key: _seconds(value) for key, value in filters.items() if value is not None}
        total: dict[str, Any] = {"matched": 0, "changed": 0, "ids": [], "skipped": {}}
        cursor = None
        while True:
            done = self._call("POST", f"/v1/watches:{action}", json={**body, "cursor": cursor})
            total["matched"] += done["matched"]
            total["changed"] += done["changed"]
            total["ids"] += done["ids"]
            for state, n in done["skipped"].items():
                total["skipped"][state] = total["skipped"].get(state, 0) + n
            cursor = done["next_cursor"]
            if cursor is None:
                return total

    def stats(self) -> dict[str, Any]:
        """Counts by state and provider, dispatch lag, poll and error rates."""
        stats: dict[str, Any] = self._call("GET", "/v1/stats")
        return stats

    def wait(
        self,
        ref: str,
        timeout: float | None = None,
        progress_bar: bool = True,
        interval: float = 1.0,
    ) -> WatchDict:
        """Block until the watch reaches a final state and return it (with its history).

        Raises ``WaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds. The progress bar
        (on stderr) shows the remote progress the warden recorded; it asks the warden every
        ``interval`` seconds and never the platform. Once the watch has been read, an API that
        stops answering (a restart, a Redis failover) is waited out for ``OUTAGE_GRACE``
        seconds before its error is raised.
        """

        def transient(exc: Exception) -> bool:
            return isinstance(exc, ApiError) and (exc.status is None or exc.status >= 500)

        return follow(
            lambda: self.get(ref), timeout, progress_bar, interval,
            transient=transient, grace=self.OUTAGE_GRACE,
        )  # fmt: skip

    # --- plumbing -------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnavailable(
                None, f"cannot reach the taskwarden API: {exc!r}; is `taskwarden api` running?",
                url=self.url,
            ) from exc  # fmt: skip
        if response.is_error:
            kind = _ERRORS.get(response.status_code, ApiError)
            raise kind(response.status_code, _detail(response), url=f"{method} {path}")
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _ref(ref: str) -> str:
    return quote(ref, safe=":")


def _defaults() -> tuple[str, str | None]:
    """The API URL and token this machine's settings give."""
    from taskwarden import api_token
    from taskwarden.config import load_settings

    settings = load_settings()
    return f"http://{settings.api.host}:{settings.api.port}", api_token.load(settings)


def follow(
    fetch: Callable[[], WatchDict],
    timeout: float | None,
    progress_bar: bool,
    interval: float,
    *,
    transient: Callable[[Exception], bool] = lambda exc: False,
    grace: float | None = 60.0,
) -> WatchDict:
    """Call ``fetch`` every ``interval`` seconds until the watch is final; show its progress.

    Once a watch has been fetched, errors that ``transient`` accepts are ridden out for up to
    ``grace`` seconds in a row (None: for as long as they last), retrying after a pause that
    doubles up to ten times ``interval``. Shared by ``Client.wait`` (over the API) and
    ``taskwarden wait`` (from the store).
    """
    started = time.monotonic()
    watch: WatchDict | None = None
    failing_since: float | None = None
    failures = 0
    bar = _Bar() if progress_bar else None
    try:
        while True:
            try:
                watch = fetch()
                failing_since, failures = None, 0
            except Exception as exc:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                failures += 1
                if watch is None or not transient(exc):
                    raise
                if grace is not None and now - failing_since > grace:
                    raise
            if bar is not None:
                bar.show(watch)
            if watch["state"] in FINAL:
                return watch
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise WaitTimeout(watch, timeout)
            pause = min(interval * 2 ** min(failures, 10), 10 * interval) if failures else interval
            pause = pause if timeout is None else min(pause, timeout - waited)
            time.sleep(max(pause, 0.0))
    finally:
        if bar is not None:
            bar.stop()


class _Bar:
    """A rich progress bar on stderr: the remote progress, state and raw platform status."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task("waiting", total=None)
        self.progress.start()

    def show(self, watch: WatchDict) -> None:
        raw = f" [{watch['raw_status']}]" if watch.get("raw_status") else ""
        description = f"{watch['id']} {watch['state']}{raw}"
        value = watch.get("progress")
        if watch["state"] == State.SUCCEEDED:
            value = 1.0
        if value is None:
            self.progress.update(self.task, description=description, total=None)
        else:
            self.progress.update(
                self.task, description=description, total=100, completed=value * 100
            )

    def stop(self) -> None:
        self.progress.stop()
