"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against
a running warden and its HTTP API: a watch moves from running to succeeded on the page without a
reload, untrusted platform text stays text, a read-protected API is read with a token, a watch
beyond the first page is reached, and the page works behind a reverse proxy under a prefix.

The screenshots land in ``test-artifacts/`` at the repository root, which CI keeps."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from taskwarden import keys
from taskwarden.lifecycle import Decision, State
from taskwarden.models import Registration, watch_id
from taskwarden.simulator.server import SimulatorServer
from taskwarden.store.watches import Commit, Store

from .conftest import Warden, running_warden, wait_for, warden_env

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("TASKWARDEN_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
READ_TOKEN = "dashboard-test-token"
# does something only if a part of the page turns data into HTML
XSS = '<img src=x onerror="window.__xss=(window.__xss||0)+1">'
WAIT_MS = 60_000  # generous: the machine may be busy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving_api(settings: dict[str, str], log_dir: Path, **extra: str) -> Iterator[str]:
    """``taskwarden api`` in its own process with these settings (a warden's, usually); yields
    its base URL."""
    port = free_port()
    env = {**os.environ, **settings, **extra}
    log_path = log_dir / f"api-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskwarden", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"taskwarden api exited: {log_path.read_text()}")
            try:
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(up, timeout=60, every=0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Dash:
    warden: Warden
    url: str

    @property
    def sim(self) -> SimulatorServer:
        return self.warden.sim


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorServer) -> Iterator[Dash]:
    """A warden of this module's own with its HTTP API (reads open, as by default)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    with running_warden(tmp, sim, processes=1) as warden, serving_api(warden.env, tmp) as url:
        yield Dash(warden, url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium (apt-get, as "
            "root). The dashboard test needs it and never skips."
        )
    with sync_playwright() as playwright:
        # Debian's own build, never a browser Playwright would download
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A fresh browser context and page, with every console error and uncaught exception."""

    page: Page
    problems: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    tab = Tab(page)

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            tab.problems.append(f"console.{message.type}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda exc: tab.problems.append(f"uncaught: {exc}"))
    yield tab
    context.close()


def keep_screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ and say where."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")
    return path


def test_a_watch_goes_from_running_to_succeeded_on_the_page_without_a_reload(
    dash: Dash, tab: Tab
) -> None:
    """The page, opened before the task is registered, shows it running with a moving progress
    bar and then succeeded, by its own updates (the event stream and polling), never a reload."""
    page, geobox = tab.page, dash.sim.geobox
    page.goto(dash.url + "/")
    expect(page.locator("#conn")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
    page.evaluate("window.__sameDocument = true")  # a reload would lose it

    task = geobox.add_task(
        name="NDVI mosaic, tile 31UFU",
        pending_seconds=0.5,
        running_seconds=14,  # long enough for a busy machine to show the bar move
        file_name="mosaic.tif",
        file_size=200_000,
    )
    # company for the screenshot: a task the platform fails, and one that keeps running
    failing = geobox.add_task(
        name="cloud mask 2024-06",
        running_seconds=1,
        outcome="failure",
        failure_msg="band B08 missing in scene S2B_MSIL2A_20240611",
    )
    endless = geobox.add_task(
        name="change detection, Rhine delta", running_seconds=900, outcome="never"
    )
    for t in (task, failing, endless):
        dash.warden.send_track(provider="geobox", remote_id=t.uuid, labels={"team": "maps"})
    wid = watch_id("geobox", task.uuid)

    watch_row = page.locator(f'#watches tr[data-watch-id="{wid}"]')
    expect(watch_row).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(watch_row.locator('[data-field="name"]')).to_have_text("NDVI mosaic, tile 31UFU")
    expect(watch_row.locator('[data-field="raw_status"]')).to_contain_text("PROGRESS")
    bar = watch_row.locator('[role="progressbar"]')
    expect(bar).to_be_visible()

    # the bar moves while the task runs: at least two values strictly between 0 and 100 %
    seen: set[int] = set()

    def moving() -> bool:
        if watch_row.get_attribute("data-state") == "running":
            value = bar.get_attribute("aria-valuenow")
            if value is not None and 0 < int(value) < 100:
                seen.add(int(value))
        return len(seen) >= 2

    wait_for(moving, timeout=30, every=0.25)
    keep_screenshot(page, "dashboard-running.png")

    expect(watch_row).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    expect(watch_row.locator('[data-field="raw_status"]')).to_contain_text("SUCCESS")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    # the transitions arrived by the event stream
    succeeded = page.locator(f'#activity li[data-watch-id="{wid}"]', has_text="succeeded")
    expect(succeeded).to_have_count(1, timeout=WAIT_MS)
    # the failure, with the platform's own message
    failure = page.locator(f'#failures li[data-watch-id="{watch_id("geobox", failing.uuid)}"]')
    expect(failure.locator('[data-field="last_error"]')).to_contain_text("band B08 missing")
    expect(page.locator('#counts .card[data-state="succeeded"] .num')).to_have_text("1")
    expect(page.locator('#providers tr[data-provider="geobox"]')).to_be_visible()
    expect(page.locator("#banner")).to_be_hidden()

    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert tab.problems == []
    keep_screenshot(page, "dashboard.png")
    dash.warden.cli("cancel", watch_id("geobox", endless.uuid))


def test_without_the_event_stream_polling_keeps_the_page_current(dash: Dash, tab: Tab) -> None:
    """When the event stream cannot be had (a proxy that buffers or blocks it), the page says it
    is polling and still shows the watch run and succeed."""
    page = tab.page
    page.route("**/v1/events*", lambda route: route.abort())
    page.goto(dash.url + "/")
    expect(page.locator("#conn")).to_have_attribute("data-mode", "polling", timeout=WAIT_MS)

    task = dash.sim.geobox.add_task(name="polled", pending_seconds=0.5, running_seconds=5)
    dash.warden.send_track(provider="geobox", remote_id=task.uuid)
    watch_row = page.locator(f'#watches tr[data-watch-id="{watch_id("geobox", task.uuid)}"]')
    expect(watch_row).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(watch_row).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    expect(page.locator("#conn")).to_have_attribute("data-mode", "polling")
    expect(page.locator("#activity li")).to_have_count(0)  # nothing came by the stream
    # the browser reports each refused stream request; nothing else went wrong
    assert [p for p in tab.problems if "ERR_FAILED" not in p] == []


def test_platform_text_is_shown_as_text_never_as_html(dash: Dash, tab: Tab) -> None:
    """A name, status word and error message carrying markup appear verbatim and run nothing."""
    geobox = dash.sim.geobox
    named = geobox.add_task(name=XSS, running_seconds=0.5, outcome="failure", failure_msg=XSS)
    odd = geobox.add_task(name="odd status", outcome="never")
    fault = dash.sim.inject(kind="unknown_status", task=odd.uuid, word=XSS, count=None)
    try:
        for t in (named, odd):
            dash.warden.send_track(provider="geobox", remote_id=t.uuid)
        named_id, odd_id = watch_id("geobox", named.uuid), watch_id("geobox", odd.uuid)
        dash.warden.wait_final(named_id, timeout=60)

        def odd_recorded() -> bool:
            watch = dash.warden.store.get(odd_id)
            return watch is not None and watch.raw_status == XSS

        wait_for(odd_recorded, timeout=60)

        page = tab.page
        page.goto(dash.url + "/")
        named_row = page.locator(f'#watches tr[data-watch-id="{named_id}"]')
        expect(named_row.locator('[data-field="name"]')).to_have_text(XSS, timeout=WAIT_MS)
        odd_row = page.locator(f'#watches tr[data-watch-id="{odd_id}"]')
        expect(odd_row.locator('[data-field="raw_status"]')).to_have_text(XSS)
        failure = page.locator(f'#failures li[data-watch-id="{named_id}"]')
        expect(failure.locator('[data-field="last_error"]')).to_contain_text(XSS)
        expect(failure.locator(".name")).to_have_text(XSS)
        page.wait_for_timeout(1500)  # an injected image would have failed to load by now
        assert page.evaluate("window.__xss") is None
        assert page.locator("main img").count() == 0
        assert tab.problems == []
    finally:
        dash.sim.faults.remove(fault)
        dash.warden.cli("cancel", watch_id("geobox", odd.uuid))


def test_a_read_protected_api_is_read_with_a_token_from_the_url(
    dash: Dash, tab: Tab, tmp_path: Path
) -> None:
    """With read auth on, the page says it needs a token; given one in ``#token=`` it reads the
    API and follows the event stream with it, drops it from the address bar, and keeps it."""
    auth = {"TASKWARDEN_API__READ_AUTH": "true", "TASKWARDEN_API__TOKEN": READ_TOKEN}
    task = dash.sim.geobox.add_task(name="protected", running_seconds=0.5)
    dash.warden.send_track(provider="geobox", remote_id=task.uuid)
    wid = watch_id("geobox", task.uuid)
    assert dash.warden.wait_final(wid, timeout=60).state is State.SUCCEEDED

    with serving_api(dash.warden.env, tmp_path, **auth) as url:
        page = tab.page
        page.goto(url + "/")
        expect(page.locator("#conn")).to_have_attribute("data-mode", "auth", timeout=WAIT_MS)
        expect(page.locator("#banner")).to_contain_text("needs a token")
        expect(page.locator(f'#watches tr[data-watch-id="{wid}"]')).to_have_count(0)

        # the browser logs each refused request, the tokenless page's last ones included:
        # leave that page first, then from here on, none
        page.goto("about:blank")
        tab.problems.clear()
        page.goto(f"{url}/#token={READ_TOKEN}")
        expect(page.locator("#conn")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
        expect(page.locator(f'#watches tr[data-watch-id="{wid}"]')).to_have_attribute(
            "data-state", "succeeded"
        )
        assert page.url == url + "/", "the token stays out of the address bar"
        page.reload()
        expect(page.locator("#conn")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
        expect(page.locator("#banner")).to_be_hidden()
        assert tab.problems == []


PAGED = 60  # more than the page's 50


def start_running(store: Store, wid: str, progress: float) -> None:
    """Commit ``running`` for a pending watch, as a poll worker would after a check."""
    provider = store.get(wid).provider  # type: ignore[union-attr]
    now = time.time()
    store.redis.zadd(keys.due(provider), {wid: 0})
    claim = next(c for c in store.claim_due(provider, now, 10_000, now + 60) if c.watch_id == wid)
    decision = Decision(State.RUNNING, "RUNNING", progress, 1.0, 0, now + 3600, note="started")
    assert store.commit(Commit(claim, decision, now))


def test_a_watch_beyond_the_first_page_is_reached_and_stays_live(
    store: Store, redis_url: str, sim: SimulatorServer, tab: Tab, tmp_path: Path
) -> None:
    """With more watches than a page holds, the oldest is not on the first page; Next shows it,
    its row follows a transition there without a reload, Previous goes back, and a new search
    starts again at page one."""
    started = time.time() - 600
    for i in range(PAGED):
        reg = Registration.model_validate({"provider": "geobox", "remote_id": f"paged-{i:02d}"})
        store.register(reg, started + i)
    newest, oldest = watch_id("geobox", f"paged-{PAGED - 1}"), watch_id("geobox", "paged-00")
    # the API alone on this Redis: no worker moves these watches but the test
    settings = warden_env(redis_url, sim, tmp_path / "data")
    settings["TASKWARDEN_ARCHIVE_URL"] = (tmp_path / "archive").as_uri()
    with serving_api(settings, tmp_path) as url:
        page = tab.page
        rows = page.locator("#watches tbody tr")
        info = page.locator("#page-info")
        page.goto(url + "/")
        expect(rows).to_have_count(50, timeout=WAIT_MS)
        expect(rows.first).to_have_attribute("data-watch-id", newest)
        expect(page.locator(f'#watches tr[data-watch-id="{oldest}"]')).to_have_count(0)
        expect(info).to_have_text(f"page 1 · {PAGED} watches in all")
        expect(page.locator("#page-prev")).to_be_disabled()
        page.evaluate("window.__sameDocument = true")  # a reload would lose it

        page.locator("#page-next").click()
        expect(info).to_have_text(f"page 2 · {PAGED} watches in all", timeout=WAIT_MS)
        expect(rows).to_have_count(PAGED - 50)
        oldest_row = page.locator(f'#watches tr[data-watch-id="{oldest}"]')
        expect(oldest_row).to_have_attribute("data-state", "pending")
        expect(page.locator("#page-next")).to_be_disabled()

        # the page shown is live: a transition of a watch on it shows there
        start_running(store, oldest, 0.4)
        expect(oldest_row).to_have_attribute("data-state", "running", timeout=WAIT_MS)
        expect(oldest_row.locator('[data-field="raw_status"]')).to_have_text("RUNNING")
        expect(oldest_row.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "40")
        expect(page.locator(f'#activity li[data-watch-id="{oldest}"]')).to_have_count(1)
        keep_screenshot(page, "dashboard-page-2.png")

        page.locator("#page-prev").click()
        expect(info).to_have_text(f"page 1 · {PAGED} watches in all", timeout=WAIT_MS)
        expect(rows).to_have_count(50)
        expect(rows.first).to_have_attribute("data-watch-id", newest)

        # a cursor fits only its own query: a search from page 2 starts again at page one
        page.locator("#page-next").click()
        expect(info).to_have_text(f"page 2 · {PAGED} watches in all", timeout=WAIT_MS)
        page.locator("#f-q").fill("paged-0")
        expect(info).to_have_text("page 1", timeout=WAIT_MS)
        expect(rows).to_have_count(10)
        expect(rows.last).to_have_attribute("data-watch-id", oldest)
        expect(page.locator("#page-next")).to_be_disabled()

        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        assert tab.problems == []


def test_the_watch_detail_view_opens_from_a_row_and_by_its_url_and_acts_with_the_token(
    dash: Dash, tab: Tab
) -> None:
    """A row opens the watch's detail (state, history, archived outputs) at an address of its
    own, which a reload keeps with the filters; its actions are refused without the token and
    say why, retry re-arms an error watch, retry of a running one is refused with the reason,
    cancel on the filter says how many first, and an abort of an ended watch is refused."""
    page, geobox, warden = tab.page, dash.sim.geobox, dash.warden
    run = uuid.uuid4().hex[:8]
    done = geobox.add_task(name="detail: archived", running_seconds=0.3, file_name="out.tif",
                           file_size=5000)  # fmt: skip
    going = geobox.add_task(name="detail: endless", running_seconds=900, outcome="never")
    lost = str(uuid.uuid4())  # no such task: its watch ends in error
    for remote in (done.uuid, going.uuid, lost):
        warden.send_track(provider="geobox", remote_id=remote, labels={"run": run})
    wid, gid, lid = (watch_id("geobox", r) for r in (done.uuid, going.uuid, lost))
    archived = warden.wait_final(wid)
    assert archived.state == "succeeded" and archived.outputs
    assert warden.wait_final(lid).state == "error"
    dialogs: list[str] = []

    def confirm(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", confirm)

    page.goto(dash.url + f"/?label=run%3D{run}")
    rows = page.locator("#watches tbody tr")
    expect(rows).to_have_count(3, timeout=WAIT_MS)
    page.locator(f'#watches tr[data-watch-id="{wid}"]').click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#d-id")).to_have_text(wid)
    expect(detail).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    assert f"watch={wid}" in page.url and "label=run%3D" in page.url
    history = page.locator("#d-history li")
    expect(history.last).to_have_attribute("data-to", "succeeded")
    assert history.count() == len(warden.store.history(wid))
    out = archived.outputs[0]
    output_row = page.locator(f'#d-outputs tr[data-key="{out["key"]}"]')
    expect(output_row).to_contain_text(out["sha256"])
    expect(page.locator('#d-fields [data-field="manifest"]')).to_have_text(archived.manifest or "")
    keep_screenshot(page, "dashboard-watch-detail.png")

    page.reload()  # the address alone brings back the filter and the open watch
    expect(page.locator("#d-id")).to_have_text(wid, timeout=WAIT_MS)
    expect(detail).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    expect(page.locator("#f-label")).to_have_value(f"run={run}")
    expect(rows).to_have_count(3, timeout=WAIT_MS)

    msg = page.locator("#d-msg")
    page.goto(dash.url + f"/?label=run%3D{run}&watch={lid}")  # opened by its address
    expect(detail).to_have_attribute("data-state", "error", timeout=WAIT_MS)
    kind = warden.store.get(lid).last_error_kind  # type: ignore[union-attr]
    assert kind is not None
    expect(page.locator('#d-fields [data-field="last_error"]')).to_contain_text(kind + ": ")
    page.locator("#d-retry").click()
    expect(msg).to_contain_text("Refused: missing bearer token", timeout=WAIT_MS)
    expect(msg).to_contain_text("actions need the API token")
    assert warden.store.get(lid).state == "error"  # type: ignore[union-attr]

    token = (Path(warden.env["TASKWARDEN_DATA_DIR"]) / "api-token").read_text().strip()
    page.locator("#token").fill(token)
    page.locator("#token-form button[type=submit]").click()
    page.locator(f'#watches tr[data-watch-id="{gid}"]').click()
    expect(detail).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    page.locator("#d-retry").click()
    expect(msg).to_contain_text(f"Refused: watch {gid} is running; only error or timed_out",
                                timeout=WAIT_MS)  # fmt: skip

    bulk = page.locator("#bulk-msg")
    page.locator("#bulk-cancel").click()
    expect(bulk).to_have_text("1 watch cancelled.", timeout=WAIT_MS)
    assert dialogs == ["1 watch of 3 matching will be cancelled. Go on?"]
    assert warden.store.get(gid).state == "cancelled"  # type: ignore[union-attr]
    expect(detail).to_have_attribute("data-state", "cancelled", timeout=WAIT_MS)
    page.locator("#d-abort").click()
    expect(msg).to_contain_text(f"Refused: watch {gid} had already ended (cancelled)",
                                timeout=WAIT_MS)  # fmt: skip
    assert not any("abort" in (h.get("note") or "") for h in warden.store.history(gid))

    page.locator(f'#watches tr[data-watch-id="{lid}"]').click()
    expect(detail).to_have_attribute("data-state", "error", timeout=WAIT_MS)
    page.locator("#d-retry").click()
    expect(msg).to_contain_text(f"Re-armed: {lid}", timeout=WAIT_MS)
    moves = [(h.get("from"), h["to"]) for h in warden.store.history(lid)]
    assert ("error", "pending") in moves
    keep_screenshot(page, "dashboard-actions.png")
    refused = [p for p in tab.problems if "the server responded with a status of" not in p]
    assert refused == []


def fail_checks(store: Store, wid: str, errors: int) -> None:
    """Commit a failed check of a pending watch, as a poll worker would: still pending, its
    ``errors``-th failure in a row recorded with its message and kind."""
    now = time.time()
    store.redis.zadd(keys.due("geobox"), {wid: 0})
    claim = next(c for c in store.claim_due("geobox", now, 10_000, now + 60) if c.watch_id == wid)
    decision = Decision(State.PENDING, None, None, 1.0, errors, now + 3600,
                        last_error="geobox answered 503", failing_since=now)  # fmt: skip
    assert store.commit(
        Commit(claim, decision, now, extra={"last_error_kind": "ProviderUnavailable"})
    )


def test_stuck_watches_are_shown_and_open_their_detail_and_back_closes_it(
    store: Store, redis_url: str, sim: SimulatorServer, tab: Tab, tmp_path: Path
) -> None:
    """The Stuck panel lists a live watch whose checks keep failing (with how many and the
    error) and the oldest running watch; a click opens its detail at its own address, and the
    browser's Back closes it again without a reload."""
    started = time.time() - 600
    for i, remote in enumerate(("stuck-failing", "stuck-old", "stuck-new")):
        reg = Registration.model_validate({"provider": "geobox", "remote_id": remote})
        store.register(reg, started + i)
    failing, old, new = (watch_id("geobox", r) for r in ("stuck-failing", "stuck-old", "stuck-new"))
    fail_checks(store, failing, 4)
    start_running(store, old, 0.1)
    start_running(store, new, 0.2)
    settings = warden_env(redis_url, sim, tmp_path / "data")
    settings["TASKWARDEN_ARCHIVE_URL"] = (tmp_path / "archive").as_uri()
    with serving_api(settings, tmp_path) as url:
        page = tab.page
        page.goto(url + "/")
        stuck = page.locator(f'#stuck-failing li[data-watch-id="{failing}"]')
        expect(stuck).to_contain_text("4 failed checks: geobox answered 503", timeout=WAIT_MS)
        oldest = page.locator("#stuck-oldest li")
        expect(oldest).to_have_count(2)
        expect(oldest.first).to_have_attribute("data-watch-id", old)
        page.evaluate("window.__sameDocument = true")  # a reload would lose it
        keep_screenshot(page, "dashboard-stuck.png")

        stuck.click()
        expect(page.locator("#d-id")).to_have_text(failing, timeout=WAIT_MS)
        expect(page.locator('#d-fields [data-field="last_error"]')).to_have_text(
            "ProviderUnavailable: geobox answered 503", timeout=WAIT_MS
        )
        expect(page.locator('#d-fields [data-field="failed_checks_in_a_row"]')).to_contain_text("4")
        assert page.url.endswith(f"?watch={failing}")
        page.go_back()
        expect(page.locator("#detail")).to_be_hidden(timeout=WAIT_MS)
        assert "watch=" not in page.url
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        assert tab.problems == []


PREFIX = "/taskwarden"
# hop-by-hop, or recomputed by the proxy's own server
NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                 "host", "content-length"}  # fmt: skip


def prefix_proxy(upstream: str) -> Starlette:
    """A reverse proxy serving ``upstream`` under PREFIX, as nginx's ``location /taskwarden/
    { proxy_pass http://upstream/; }`` does: the prefix is stripped, anything outside it is a
    404, and bodies are streamed as they come (the event stream's included)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(30, read=None)  # an event stream may be quiet for a while
        async with httpx.AsyncClient(base_url=upstream, timeout=timeout) as client:
            app.state.client = client
            yield

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not path.startswith(PREFIX + "/"):
            return PlainTextResponse(f"not under {PREFIX}/", status_code=404)
        client: httpx.AsyncClient = request.app.state.client
        outgoing = client.build_request(
            request.method,
            path.removeprefix(PREFIX),
            params=request.url.query,
            headers=[(k, v) for k, v in request.headers.items() if k not in NOT_FORWARDED],
            content=await request.body(),
        )
        answer = await client.send(outgoing, stream=True)
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in NOT_FORWARDED}
        return StreamingResponse(
            answer.aiter_raw(),
            answer.status_code,
            headers,
            background=BackgroundTask(answer.aclose),
        )

    methods = ["GET", "HEAD", "POST"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


@contextmanager
def serving_in_thread(app: Starlette) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_the_dashboard_works_behind_a_proxy_under_a_prefix(dash: Dash, tab: Tab) -> None:
    """Served at /taskwarden/ by a proxy that strips the prefix, the page loads its script and
    stylesheet, reads the API, follows the event stream, keeps a token out of the address bar,
    and asks for nothing outside the prefix (where the proxy has nothing)."""
    task = dash.sim.geobox.add_task(name="behind a proxy", pending_seconds=0.5, running_seconds=3)
    wid = watch_id("geobox", task.uuid)
    asked: list[str] = []
    with serving_in_thread(prefix_proxy(dash.url)) as proxy:
        base = proxy + PREFIX + "/"
        page = tab.page
        page.on("request", lambda request: asked.append(request.url))
        page.goto(base + "#token=unused-while-reads-are-open")
        expect(page.locator("#conn")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
        assert page.url == base, "the token leaves the address bar, the prefix stays"
        header = "getComputedStyle(document.querySelector('header')).backgroundColor"
        assert page.evaluate(header) == "rgb(31, 41, 55)", "the stylesheet is applied"

        dash.warden.send_track(provider="geobox", remote_id=task.uuid)
        row = page.locator(f'#watches tr[data-watch-id="{wid}"]')
        expect(row).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
        succeeded = page.locator(f'#activity li[data-watch-id="{wid}"]', has_text="succeeded")
        expect(succeeded).to_have_count(1, timeout=WAIT_MS)  # by the event stream
        expect(page.locator("#banner")).to_be_hidden()
        keep_screenshot(page, "dashboard-under-a-prefix.png")
        page.goto("about:blank")  # ends the event stream before the proxy stops

    fetched = [u for u in asked if u.startswith("http")]
    assert any("/v1/events" in u for u in fetched) and any("/v1/stats" in u for u in fetched)
    assert [u for u in fetched if not u.startswith(base)] == []
    assert tab.problems == []


def test_the_dashboard_files_ship_with_the_package() -> None:
    """The page and its script and stylesheet are package data, found by importlib.resources."""
    from importlib.resources import files

    web = files("taskwarden.web")
    html = web.joinpath("dashboard.html").read_text()
    assert 'href="static/dashboard.css"' in html and 'src="static/dashboard.js"' in html
    for name in ("dashboard.js", "dashboard.css"):
        assert web.joinpath(name).is_file()
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = web.joinpath(name).read_text()
        # nothing is fetched from elsewhere: no CDN, no remote font
        assert "http://" not in text and "https://" not in text, name
        # nor from the server's root, which is not the page's behind a proxy under a prefix
        assert not re.search(r"""["'`(]/(v1|static)/""", text), name
