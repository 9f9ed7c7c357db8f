// The taskwarden ops dashboard: plain JavaScript, no build step, no third-party code.
//
// It polls v1/stats and one page of v1/watches every two seconds (progress is not a transition,
// so only polling moves the bars) and follows v1/events (server-sent events) to refresh at once
// on a transition. The event stream is read with fetch rather than EventSource, because
// EventSource cannot send the Authorization header a warden with read auth wants; if the stream
// cannot be had, polling alone keeps the page current.
//
// Every URL is relative to the page, so the same page works at / and behind a reverse proxy that
// serves the warden under a prefix (ops.example/taskwarden/, say).
//
// Everything a platform or a user wrote (names, status words, error messages) is untrusted: it
// only ever reaches the page as textContent or an attribute value, never as HTML.
"use strict";

(() => {
  const STATES = ["pending", "running", "archiving", "succeeded", "failed", "cancelled",
    "timed_out", "error"];
  const ACTIVE = ["pending", "running", "archiving"];
  const FAILURES = ["failed", "error", "timed_out"];
  const POLL_MS = 2000;
  const HIDDEN_POLL_MS = 10000; // a background tab need not keep the warden busy
  const FAILURES_EVERY_MS = 30000;
  const MAX_ACTIVITY = 40;
  const TOKEN_KEY = "taskwarden.token";
  const PAGE_SIZE = 50;

  const $ = (id) => document.getElementById(id);

  // --- the token: #token=... in the URL, the field, or what this browser kept ----------------

  function storedToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function keepToken(value) {
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: the token lives as long as the page
    }
  }

  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const value = params.get("token");
    if (value === null) return null;
    // out of the address bar, the history and any screenshot
    history.replaceState(null, "", location.pathname + location.search);
    return value.trim();
  }

  let token = storedToken();
  const fromUrl = tokenFromFragment();
  if (fromUrl !== null) {
    token = fromUrl;
    keepToken(token);
  }

  // --- small DOM helpers: text only ----------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(node, value) {
    const text = value === null || value === undefined ? "" : String(value);
    if (node.textContent !== text) node.textContent = text;
  }

  function fmtRate(value) {
    if (typeof value !== "number" || !isFinite(value)) return "–";
    if (value === 0) return "0";
    return value < 0.1 ? value.toFixed(3) : value < 10 ? value.toFixed(2) : value.toFixed(0);
  }

  function fmtSeconds(value) {
    if (typeof value !== "number" || !isFinite(value)) return "–";
    if (value < 10) return value.toFixed(1) + " s";
    if (value < 120) return Math.round(value) + " s";
    if (value < 7200) return Math.round(value / 60) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  // Server timestamps against the server's clock (its Date header), so a browser whose clock is
  // off still says "3 s ago" rightly.
  let clockOffset = 0;
  const serverNow = () => Date.now() / 1000 + clockOffset;

  function ago(epoch) {
    if (typeof epoch !== "number") return "";
    const seconds = Math.max(0, serverNow() - epoch);
    return seconds < 1 ? "now" : fmtSeconds(seconds) + " ago";
  }

  function isoTime(epoch) {
    return typeof epoch === "number" ? new Date(epoch * 1000).toISOString() : "";
  }

  function clockTime(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  }

  // --- talking to the API --------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function headers(accept) {
    const h = { Accept: accept };
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  // `path` has no leading slash: it is resolved against the page's own address
  const apiUrl = (path) => new URL(path, document.baseURI).href;

  async function getJson(path) {
    const response = await fetch(apiUrl(path), {
      headers: headers("application/json"), cache: "no-store",
    });
    const date = Date.parse(response.headers.get("Date") || "");
    if (!isNaN(date)) {
      const offset = (date - Date.now()) / 1000;
      // the header has one-second resolution: only a real skew is worth correcting
      clockOffset = Math.abs(offset) > 2 ? offset : 0;
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        if (body && typeof body.detail === "string") detail = body.detail;
      } catch {
        // not JSON: keep the status text
      }
      throw new ApiError(response.status, `${path}: ${response.status} ${detail}`);
    }
    return response.json();
  }

  // --- the page of watches shown ------------------------------------------------------------
  //
  // One page at a time, opened by the cursor the previous page gave (cursors[i] opens page i + 1;
  // null, the first). Every page visited keeps its cursor, so Previous is exact; a later page
  // stays anchored where it began while new watches arrive on the first. The filters are taken
  // when they change, not at each poll, because a cursor only fits the query that made it.

  let filters = { state: "", q: "" };
  let cursors = [null];
  let nextCursor = null;
  let view = 0; // bumped on every change of page or filters, so that a late answer is dropped

  function watchesPath() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE), sort: "-created_at" });
    if (filters.state) query.set("state", filters.state);
    if (filters.q) query.set("q", filters.q);
    const cursor = cursors[cursors.length - 1];
    if (cursor) query.set("cursor", cursor);
    return "v1/watches?" + query;
  }

  async function loadWatches() {
    try {
      return await getJson(watchesPath());
    } catch (err) {
      // a cursor this server no longer takes (an upgrade between two polls): back to page one
      if (!(err instanceof ApiError && err.status === 422 && cursors.length > 1)) throw err;
      cursors = [null];
      return getJson(watchesPath());
    }
  }

  function changeView(newFilters, newCursors) {
    filters = newFilters;
    cursors = newCursors;
    nextCursor = null;
    view += 1;
    renderPager(null);
    $("watches").setAttribute("aria-busy", "true");
    refresh();
  }

  function renderPager(total) {
    const first = cursors.length === 1;
    $("page-first").disabled = first;
    $("page-prev").disabled = first;
    $("page-next").disabled = !nextCursor;
    let info = `page ${cursors.length}`;
    if (typeof total === "number") info += ` · ${total} watch${total === 1 ? "" : "es"} in all`;
    setText($("page-info"), info);
  }

  // how many watches the filters match, when the counts by state say (not for a text search)
  function matching(counts) {
    if (filters.q) return null;
    return filters.state ? counts[filters.state] || 0 : sum(counts, STATES);
  }

  // --- connection status ---------------------------------------------------------------------

  let streamLive = false;
  let pollOk = false;

  function showStatus(error) {
    const conn = $("conn");
    const banner = $("banner");
    let mode;
    let text;
    if (error && error.status === 401) {
      mode = "auth";
      text = "token needed";
      banner.textContent = token
        ? "The warden refused this token. Paste the right one in the API token field."
        : "This warden needs a token to read. Paste it in the API token field, " +
          "or add #token=<token> to this page's address.";
      banner.hidden = false;
    } else if (error) {
      mode = "offline";
      text = "offline";
      banner.textContent = "Cannot reach the warden: " + error.message + " (retrying)";
      banner.hidden = false;
    } else {
      banner.hidden = true;
      mode = streamLive ? "live" : "polling";
      text = streamLive ? "live" : "polling every 2 s";
    }
    conn.dataset.mode = mode;
    setText(conn, text);
    conn.title = streamLive
      ? "following the event stream, and refreshing progress every 2 s"
      : "the event stream is not connected: refreshing every 2 s";
  }

  // --- rendering: counts, lag, providers -----------------------------------------------------

  function renderCounts(counts) {
    const box = $("counts");
    for (const state of STATES) {
      let card = box.querySelector(`.card[data-state="${state}"]`);
      if (!card) {
        card = el("div", { class: "card", "data-state": state },
          el("div", { class: "num" }), el("div", { class: "label" }, state.replace("_", " ")));
        box.insertBefore(card, $("lag-card"));
      }
      const n = counts[state] || 0;
      setText(card.querySelector(".num"), n);
      card.classList.toggle("zero", n === 0);
    }
  }

  function renderLag(lag) {
    setText($("lag"), fmtSeconds(lag));
    const level = typeof lag !== "number" ? "ok" : lag > 30 ? "bad" : lag > 5 ? "warn" : "ok";
    $("lag-card").dataset.level = level;
    $("lag-card").title = "how long the oldest due status check has waited to be dispatched";
  }

  function sum(counts, states) {
    return states.reduce((total, s) => total + ((counts || {})[s] || 0), 0);
  }

  function renderProviders(providers) {
    const body = $("providers").querySelector("tbody");
    const rows = Object.keys(providers || {}).sort().map((name) => {
      const p = providers[name] || {};
      const polls = p.polls_per_s;
      const errors = p.errors_per_s;
      let rate = "–";
      let level = "ok";
      if (typeof polls === "number" && polls > 0 && typeof errors === "number") {
        const ratio = errors / polls;
        rate = (ratio * 100).toFixed(ratio < 0.1 ? 1 : 0) + " %";
        level = ratio > 0.25 ? "bad" : ratio > 0.05 ? "warn" : "ok";
      } else if (typeof errors === "number" && errors > 0) {
        rate = "100 %";
        level = "bad";
      }
      const waits = p.rate_limit_waits_per_s;
      const open = p.circuit && p.circuit.state === "open";
      const failing = p.failing > 0 ? ` ${p.failing} failing` : "";
      return el("tr", { "data-provider": name },
        el("td", {}, name,
          open ? el("span", { class: "badge", "data-state": "error", "data-field": "circuit",
            title: "the platform keeps failing: only a probe check goes, every " +
              "probe interval, until it answers" }, "circuit open") : null,
          failing ? el("span", { class: "muted small", "data-field": "failing" }, failing) : null),
        el("td", { class: "n" }, sum(p.counts, ACTIVE)),
        el("td", { class: "n" }, sum(p.counts, ["succeeded"])),
        el("td", { class: "n" }, sum(p.counts, FAILURES)),
        el("td", { class: "n" }, fmtRate(polls)),
        el("td", { class: "n" }, fmtRate(errors)),
        el("td", { class: "n", "data-level": level, "data-field": "error-rate" }, rate),
        el("td", { class: "n", "data-level": waits > 0 ? "warn" : "ok" }, fmtRate(waits)));
    });
    if (rows.length === 0) {
      rows.push(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No provider has watches yet.")));
    }
    body.replaceChildren(...rows);
  }

  function renderWorkers(workers) {
    const parts = [];
    for (const [name, value] of Object.entries(workers || {}).sort()) {
      if (typeof value === "number") parts.push(`${name}: ${value > 1e9 ? ago(value) : value}`);
      else if (value === null) parts.push(`${name}: never`);
      else if (typeof value === "object") {
        const at = value.at ?? value.last ?? value.last_seen;
        parts.push(`${name}: ${typeof at === "number" ? ago(at) : JSON.stringify(value)}`);
      } else parts.push(`${name}: ${value}`);
    }
    setText($("workers"), parts.length ? "Heartbeats — " + parts.join(" · ") : "");
  }

  // --- rendering: the watches table (rows kept by id, so nothing flickers) -------------------

  const rowsById = new Map();

  function progressCell() {
    const fill = el("div", { class: "fill" });
    const bar = el("div", {
      class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    }, fill);
    return el("td", { class: "progress-col", "data-field": "progress" },
      bar, el("span", { class: "pct" }));
  }

  function newRow(id) {
    const cells = {
      id: el("td", { "data-field": "id" }, el("code", {})),
      provider: el("td", { "data-field": "provider" }),
      remote: el("td", { "data-field": "remote_id", class: "clip mono" }),
      name: el("td", { "data-field": "name", class: "clip" }),
      state: el("td", { "data-field": "state" }, el("span", { class: "badge" })),
      progress: progressCell(),
      raw: el("td", { "data-field": "raw_status", class: "clip" }, el("code", { class: "raw" }),
        el("span", { class: "retrying" })),
      updated: el("td", { "data-field": "updated_at", class: "muted nowrap" }),
    };
    const row = el("tr", { "data-watch-id": id }, ...Object.values(cells));
    return { row, cells };
  }

  function updateRow(entry, w) {
    const { row, cells } = entry;
    row.dataset.state = w.state;
    setText(cells.id.firstChild, w.id);
    const labels = Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    cells.id.title = labels ? "labels: " + labels : "";
    setText(cells.provider, w.provider);
    setText(cells.remote, w.remote_id);
    cells.remote.title = w.remote_id || "";
    setText(cells.name, w.name || "");
    cells.name.title = w.name || "";
    const badge = cells.state.firstChild;
    badge.dataset.state = w.state;
    setText(badge, (w.state || "").replace("_", " "));

    const bar = cells.progress.querySelector(".bar");
    const pct = cells.progress.querySelector(".pct");
    if (typeof w.progress === "number" && isFinite(w.progress)) {
      const value = Math.round(Math.min(1, Math.max(0, w.progress)) * 100);
      bar.firstChild.style.width = value + "%";
      bar.setAttribute("aria-valuenow", value);
      bar.dataset.state = w.state;
      bar.hidden = false;
      setText(pct, value + "%");
    } else {
      bar.hidden = true;
      bar.removeAttribute("aria-valuenow");
      setText(pct, "–");
    }

    setText(cells.raw.querySelector(".raw"), w.raw_status || "");
    cells.raw.title = w.raw_status || "";
    const retrying = cells.raw.querySelector(".retrying");
    const struggling = ACTIVE.includes(w.state) && (w.errors > 0 || w.failing_since != null);
    const since = typeof w.failing_since === "number"
      ? `, failing for ${fmtSeconds(Math.max(0, serverNow() - w.failing_since))}` : "";
    const count = w.errors > 0 ? ` ${w.errors} failed check${w.errors > 1 ? "s" : ""}` : " failing";
    setText(retrying, struggling ? ` ⚠${count}${since}` : "");
    retrying.title = struggling ? w.last_error || "" : "";

    setText(cells.updated, ago(w.updated_at));
    cells.updated.title = isoTime(w.updated_at);
  }

  function emptyText() {
    if (cursors.length > 1) return "No watches on this page.";
    return filters.state || filters.q ? "No watches match these filters." : "No watches.";
  }

  function renderWatches(items) {
    const body = $("watches").querySelector("tbody");
    const seen = new Set();
    items.forEach((w, i) => {
      seen.add(w.id);
      let entry = rowsById.get(w.id);
      if (!entry) {
        entry = newRow(w.id);
        rowsById.set(w.id, entry);
      }
      updateRow(entry, w);
      if (body.children[i] !== entry.row) body.insertBefore(entry.row, body.children[i] || null);
    });
    for (const [id, entry] of rowsById) {
      if (!seen.has(id)) {
        entry.row.remove();
        rowsById.delete(id);
      }
    }
    setText($("watches-empty"), emptyText());
    $("watches-empty").hidden = items.length > 0;
    $("watches").removeAttribute("aria-busy");
  }

  // --- rendering: recent failures ------------------------------------------------------------

  function renderFailures(watches) {
    const items = watches.map((w) =>
      el("li", { "data-watch-id": w.id, "data-state": w.state },
        el("div", { class: "head" },
          el("span", { class: "badge", "data-state": w.state }, w.state.replace("_", " ")),
          el("span", { class: "who" }, `${w.provider} `, el("code", {}, w.remote_id)),
          w.name ? el("span", { class: "name" }, w.name) : null,
          el("span", { class: "muted when", title: isoTime(w.updated_at), "data-at": w.updated_at },
            ago(w.updated_at))),
        w.raw_status
          ? el("div", { class: "muted small" }, "platform status ", el("code", {}, w.raw_status))
          : null,
        el("pre", { class: "error", "data-field": "last_error" },
          w.last_error || "(no message recorded)")));
    $("failures").replaceChildren(...items);
    $("failures-empty").hidden = items.length > 0;
  }

  let failuresShown = null;

  async function refreshFailures() {
    const lists = await Promise.all(FAILURES.map((state) =>
      getJson(`v1/watches?state=${state}&sort=-updated_at&limit=10`)));
    const all = lists.flatMap((page) => page.items || []);
    all.sort((a, b) => (b.updated_at || 0) - (a.updated_at || 0));
    const shown = all.slice(0, 12);
    const key = shown.map((w) => `${w.id}@${w.updated_at}`).join(" ");
    // rebuilt only when it changed, so that an error message being selected stays selected
    if (key !== failuresShown) {
      failuresShown = key;
      renderFailures(shown);
    }
  }

  function ageFailures() {
    for (const when of $("failures").querySelectorAll(".when[data-at]")) {
      setText(when, ago(Number(when.dataset.at)));
    }
  }

  // --- the refresh loop ----------------------------------------------------------------------

  let timer = null;
  let busy = false;
  let again = false;
  let failuresKey = null;
  let failuresAt = 0;

  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    clearTimeout(timer);
    let error = null;
    try {
      const asked = view;
      const [stats, page] = await Promise.all([getJson("v1/stats"), loadWatches()]);
      const counts = stats.counts || {};
      renderCounts(counts);
      renderLag(stats.dispatch_lag_seconds);
      renderProviders(stats.providers);
      renderWorkers(stats.workers);
      // the page or the filters changed while this was asked: the next refresh shows the new one
      if (asked === view) {
        renderWatches(page.items || []);
        nextCursor = page.next_cursor || null;
        renderPager(matching(counts));
      }
      // failed watches change rarely: fetch them when their counts move, or now and then
      const key = FAILURES.map((s) => counts[s] || 0).join(",");
      if (key !== failuresKey || Date.now() - failuresAt > FAILURES_EVERY_MS) {
        await refreshFailures();
        failuresKey = key;
        failuresAt = Date.now();
      }
      ageFailures();
      pollOk = true;
      setText($("updated"), "updated " + new Date().toLocaleTimeString([], { hour12: false }));
    } catch (err) {
      pollOk = false;
      error = err;
      console.warn("taskwarden dashboard:", err.message);
    } finally {
      busy = false;
    }
    showStatus(error);
    if (again) {
      again = false;
      refresh();
      return;
    }
    const wait = document.hidden ? HIDDEN_POLL_MS : error && error.status === 401 ? 5000 : POLL_MS;
    timer = setTimeout(refresh, wait);
  }

  let soon = null;
  function refreshSoon() {
    // a burst of transitions is one refresh
    if (soon === null) {
      soon = setTimeout(() => {
        soon = null;
        refresh();
      }, 150);
    }
  }

  // --- the event stream ----------------------------------------------------------------------

  let lastEventId = null;
  let streamAbort = null;

  function addActivity(data) {
    const list = $("activity");
    const at = Number(data.at);
    const item = el("li", { "data-watch-id": data.watch_id || "" },
      el("span", { class: "muted when", title: isNaN(at) ? "" : isoTime(at) },
        isNaN(at) ? "" : clockTime(at)),
      el("span", { class: "who" }, `${data.provider || ""} `, el("code", {}, data.remote_id || "")),
      el("span", { class: "move" },
        data.from ? el("span", { class: "badge", "data-state": data.from }, data.from) : "new",
        " → ",
        el("span", { class: "badge", "data-state": data.to }, data.to || "?")),
      data.raw ? el("code", { class: "raw" }, data.raw) : null,
      // "remote <status>" only repeats the status; anything else (a message, a reason) is news
      data.note && data.note !== `remote ${data.raw}`
        ? el("span", { class: "muted note", title: data.note }, data.note)
        : null);
    list.prepend(item);
    while (list.children.length > MAX_ACTIVITY) list.lastChild.remove();
    $("activity-empty").hidden = true;
  }

  function dispatchBlock(block) {
    let id = null;
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (id !== null) lastEventId = id;
    if (data.length === 0 || type !== "transition") return;
    try {
      addActivity(JSON.parse(data.join("\n")));
    } catch (err) {
      console.warn("taskwarden dashboard: bad event", err.message);
    }
    refreshSoon();
  }

  async function readStream(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // a CR at the end of a chunk may be the first half of a CRLF: keep it for the next one
      const hold = buffer.endsWith("\r") ? "\r" : "";
      let text = (hold ? buffer.slice(0, -1) : buffer).replace(/\r\n?/g, "\n");
      let end;
      while ((end = text.indexOf("\n\n")) >= 0) {
        dispatchBlock(text.slice(0, end));
        text = text.slice(end + 2);
      }
      buffer = text + hold;
    }
  }

  let backoff = 1000;
  let wake = null;

  function pause(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  async function follow() {
    for (;;) {
      streamAbort = new AbortController();
      const h = headers("text/event-stream");
      if (lastEventId) h["Last-Event-ID"] = lastEventId;
      const path = "v1/events" + (lastEventId ? "?after=" + encodeURIComponent(lastEventId) : "");
      try {
        const response = await fetch(apiUrl(path), {
          headers: h, cache: "no-store", signal: streamAbort.signal,
        });
        if (!response.ok || !response.body) throw new ApiError(response.status, "event stream");
        streamLive = true;
        backoff = 1000;
        if (pollOk) showStatus(null);
        await readStream(response);
      } catch (err) {
        // a dropped stream is routine (a restart, a proxy's idle timeout): reconnect quietly
        if (err.name !== "AbortError" && !(err instanceof ApiError)) {
          console.info("taskwarden dashboard: event stream:", err.message);
        }
      }
      streamLive = false;
      if (pollOk) showStatus(null);
      await pause(backoff);
      backoff = Math.min(backoff * 2, 30000);
    }
  }

  function restartStream() {
    // a new token: reconnect now rather than after the backoff
    backoff = 250;
    if (streamAbort) streamAbort.abort();
    if (wake) wake();
  }

  // --- wiring --------------------------------------------------------------------------------

  function start() {
    const select = $("f-state");
    for (const state of STATES) select.append(el("option", { value: state }, state.replace("_", " ")));
    // what the browser may have kept in the fields across a reload is what the table shows
    filters = { state: select.value, q: $("f-q").value.trim() };
    let typing = null;
    const filtersChanged = () => {
      clearTimeout(typing);
      const wanted = { state: select.value, q: $("f-q").value.trim() };
      if (wanted.state === filters.state && wanted.q === filters.q) return false;
      changeView(wanted, [null]);
      return true;
    };
    select.addEventListener("change", filtersChanged);
    $("f-q").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(filtersChanged, 300);
    });
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      if (!filtersChanged()) refresh(); // Enter: look again now
    });
    $("page-first").addEventListener("click", () => changeView(filters, [null]));
    $("page-prev").addEventListener("click", () => changeView(filters, cursors.slice(0, -1)));
    $("page-next").addEventListener("click", () => {
      if (nextCursor) changeView(filters, [...cursors, nextCursor]);
    });

    const field = $("token");
    field.value = token;
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      token = field.value.trim();
      keepToken(token);
      restartStream();
      refresh();
    });
    $("token-clear").addEventListener("click", () => {
      token = "";
      field.value = "";
      keepToken("");
      restartStream();
      refresh();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });

    refresh();
    follow();
  }

  start();
})();
