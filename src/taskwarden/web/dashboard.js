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
// The filters, the page and the open watch live in the query string (?state=&provider=&label=
// &q=&at=<cursors>&watch=<id>), so a view can be shared and survives a reload; the token stays
// out of it (the fragment that brings one is wiped).
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

  let filters = { state: "", provider: "", label: "", q: "" };
  let cursors = [null];
  let nextCursor = null;
  let view = 0; // bumped on every change of page or filters, so that a late answer is dropped

  function watchesPath() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE), sort: "-created_at" });
    if (filters.state) query.set("state", filters.state);
    if (filters.provider) query.set("provider", filters.provider);
    for (const pair of labelPairs(filters.label)) query.append("label", pair);
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
      saveUrl();
      return getJson(watchesPath());
    }
  }

  // "run=a, team=b" (commas or spaces between pairs)
  function labelPairs(text) {
    return (text || "").split(/[\s,]+/).filter((pair) => pair !== "");
  }

  function changeView(newFilters, newCursors) {
    filters = newFilters;
    cursors = newCursors;
    saveUrl();
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

  // how many watches the filters match, when the counts say (not for a text or label search)
  function matching(stats) {
    if (filters.q || filters.label) return null;
    let counts = stats.counts || {};
    if (filters.provider) counts = ((stats.providers || {})[filters.provider] || {}).counts || {};
    return filters.state ? counts[filters.state] || 0 : sum(counts, STATES);
  }

  // --- the address: filters, page and open watch ---------------------------------------------

  let openId = null;

  function saveUrl(push) {
    const query = new URLSearchParams();
    for (const key of ["state", "provider", "label", "q"]) {
      if (filters[key]) query.set(key, filters[key]);
    }
    if (cursors.length > 1) query.set("at", cursors.slice(1).join("."));
    if (openId) query.set("watch", openId);
    const search = query.toString();
    const target = location.pathname + (search ? "?" + search : "");
    if (target === location.pathname + location.search) return;
    if (push) history.pushState(null, "", target);
    else history.replaceState(null, "", target);
  }

  function readUrl() {
    const query = new URLSearchParams(location.search);
    const wanted = {
      state: query.get("state") || "", provider: query.get("provider") || "",
      label: query.get("label") || "", q: query.get("q") || "",
    };
    const at = query.get("at");
    return { filters: wanted, cursors: [null, ...(at ? at.split(".") : [])],
      watch: query.get("watch") || null };
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
    const row = el("tr", { "data-watch-id": id, title: "open this watch" }, ...Object.values(cells));
    row.addEventListener("click", () => openWatch(id));
    return { row, cells };
  }

  function updateRow(entry, w) {
    const { row, cells } = entry;
    row.dataset.state = w.state;
    row.setAttribute("aria-selected", String(w.id === openId));
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
    return filters.state || filters.provider || filters.label || filters.q
      ? "No watches match these filters." : "No watches.";
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

  // --- the provider filter: the providers the warden reports ---------------------------------

  function renderProviderChoice(providers) {
    const select = $("f-provider");
    const known = new Set([...select.options].map((o) => o.value));
    const names = Object.keys(providers || {});
    if (filters.provider) names.push(filters.provider);
    for (const name of names.sort()) {
      if (!known.has(name)) {
        select.append(el("option", { value: name }, name));
        known.add(name);
      }
    }
    if (select.value !== filters.provider) select.value = filters.provider;
  }

  // --- the watch detail view -----------------------------------------------------------------

  const SECRETISH = /token|secret|passw|credential|auth|api.?key/i;

  function masked(params) {
    const out = {};
    for (const [key, value] of Object.entries(params || {})) {
      out[key] = SECRETISH.test(key) ? "(hidden)" : value;
    }
    return out;
  }

  function when(epoch) {
    return typeof epoch === "number" ? `${isoTime(epoch)} (${relative(epoch)})` : "–";
  }

  function relative(epoch) {
    const seconds = epoch - serverNow();
    return seconds > 1 ? "in " + fmtSeconds(seconds) : ago(epoch);
  }

  function fmtBytes(n) {
    if (typeof n !== "number") return "–";
    if (n < 1024) return n + " B";
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let value = n / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return value.toFixed(1) + " " + units[unit];
  }

  function openWatch(id, push = true) {
    const changed = id !== openId;
    openId = id;
    saveUrl(push && changed);
    for (const [rid, entry] of rowsById) entry.row.setAttribute("aria-selected", String(rid === id));
    if (!id) {
      $("detail").hidden = true;
      return;
    }
    if (changed) {
      shownDetail = null;
      $("detail").hidden = false;
      setText($("d-id"), id);
      $("d-msg").hidden = true;
      $("detail").setAttribute("aria-busy", "true");
    }
    refreshDetail().catch((err) => console.info("taskwarden dashboard:", err.message));
    if (changed) $("detail").scrollIntoView({ block: "start" });
  }

  let shownDetail = null;

  async function refreshDetail() {
    const id = openId;
    let watch;
    try {
      watch = await getJson("v1/watches/" + encodeURIComponent(id));
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404) || id !== openId) throw err;
      $("d-body").hidden = true;
      $("d-missing").hidden = false;
      setText($("d-missing"), `No watch ${id} (it may have been forgotten).`);
      $("detail").removeAttribute("aria-busy");
      return;
    }
    if (id !== openId) return;
    $("d-body").hidden = false;
    $("d-missing").hidden = true;
    const key = JSON.stringify(watch);
    if (key !== shownDetail) {
      shownDetail = key;
      renderDetail(watch);
    }
    $("detail").removeAttribute("aria-busy");
  }

  function renderDetail(w) {
    const badge = $("d-state");
    badge.dataset.state = w.state;
    setText(badge, (w.state || "").replace("_", " "));
    $("detail").dataset.state = w.state;
    const labels = Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    const progress = typeof w.progress === "number" ? Math.round(w.progress * 100) + "%" : "–";
    const webhook = w.webhook || w.webhook_status
      ? `${w.webhook || "(the global URL)"}: ${w.webhook_status || "not sent yet"}` +
        (w.webhook_attempts ? ` after ${w.webhook_attempts} attempt(s)` : "") +
        (w.webhook_error ? ` (last error: ${w.webhook_error})` : "")
      : "none";
    const rows = [
      ["provider", w.provider],
      ["remote id", w.remote_id],
      ["name", w.name || "–"],
      ["state", w.state + (w.state === "archiving" && w.outcome ? ` (lands on ${w.outcome})` : "")],
      ["progress", progress],
      ["platform status", w.raw_status || "–"],
      ["labels", labels || "–"],
      ["created", when(w.created_at)],
      ["updated", when(w.updated_at)],
      ["next check", ACTIVE.includes(w.state) ? when(w.next_poll_at) : "–"],
      ["deadline", when(w.deadline)],
      ["finished", when(w.finished_at)],
      ["platform created", when(w.remote_created_at)],
      ["platform started", when(w.remote_started_at)],
      ["platform ended", when(w.remote_ended_at)],
      ["checks", String(w.polls ?? 0)],
      ["failed checks in a row", String(w.errors ?? 0) +
        (w.failing_since ? ` (since ${isoTime(w.failing_since)})` : "")],
      ["last error", w.last_error
        ? (w.last_error_kind ? `${w.last_error_kind}: ` : "") + w.last_error : "–"],
      ["archive", w.archive || "none"],
      ["manifest", w.manifest || "–"],
      ["webhook", webhook],
    ];
    if (w.details) rows.push(["platform details", JSON.stringify(w.details)]);
    $("d-fields").replaceChildren(...rows.flatMap(([name, value]) => [
      el("dt", {}, name),
      el("dd", { "data-field": name.replace(/ /g, "_") }, value),
    ]));

    $("d-history").replaceChildren(...(w.history || []).map((h) =>
      el("li", { "data-to": h.to },
        el("time", { class: "muted", datetime: isoTime(h.at), title: isoTime(h.at) },
          isoTime(h.at).replace("T", " ").replace(/\.\d+Z$/, "Z")),
        " ",
        h.from ? el("span", { class: "badge", "data-state": h.from }, h.from) : "new",
        " → ",
        el("span", { class: "badge", "data-state": h.to }, h.to),
        h.raw ? el("code", { class: "raw" }, " " + h.raw) : null,
        h.note ? el("span", { class: "muted note" }, h.note) : null)));

    const outputs = w.outputs || [];
    $("d-outputs").querySelector("tbody").replaceChildren(...outputs.map((o) =>
      el("tr", { "data-key": o.key },
        el("td", {}, o.name || "–"),
        el("td", { class: "mono" }, o.key || "–"),
        el("td", { class: "n", title: `${o.size} bytes` }, fmtBytes(o.size)),
        el("td", { class: "mono clip", title: o.sha256 || "" }, o.sha256 || "–"),
        el("td", {}, o.content_type || "–"))));
    $("d-outputs").hidden = outputs.length === 0;
    $("d-outputs-empty").hidden = outputs.length > 0;
    setText($("d-params"), JSON.stringify(masked(w.params), null, 2));
  }

  // --- actions (they need the API token) -----------------------------------------------------

  async function postJson(path, body) {
    const h = headers("application/json");
    h["Content-Type"] = "application/json";
    const response = await fetch(apiUrl(path), {
      method: "POST", headers: h, body: JSON.stringify(body || {}), cache: "no-store",
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      // not JSON
    }
    if (!response.ok) {
      let detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
      if (response.status === 401) detail += ": actions need the API token (the field above)";
      throw new ApiError(response.status, detail);
    }
    return data;
  }

  function say(node, text, level) {
    node.dataset.level = level;
    setText(node, text);
    node.hidden = false;
  }

  async function actOnWatch(kind) {
    const id = openId;
    const msg = $("d-msg");
    const path = "v1/watches/" + encodeURIComponent(id) + (kind === "retry" ? "/retry" : "/cancel");
    const body = kind === "abort" ? { abort: true } : {};
    try {
      const done = await postJson(path, body);
      if (kind === "retry") say(msg, `Re-armed: ${id} is ${done.watch.state} again.`, "ok");
      else if (done.cancelled) {
        say(msg, `Cancelled${kind === "abort" ? "; the platform was asked to abort it" : ""}.`, "ok");
      } else say(msg, `Nothing to do: ${id} had already ended (${done.watch.state}).`, "ok");
    } catch (err) {
      say(msg, "Refused: " + err.message, "bad");
    }
    refresh();
  }

  function bulkBody() {
    const body = { label: labelPairs(filters.label), limit: 500 };
    for (const key of ["state", "provider", "q"]) if (filters[key]) body[key] = filters[key];
    return body;
  }

  const BULK_BATCHES = 40; // 20,000 watches per click at most: a larger run is clicked again

  async function runBulk(action, extra) {
    const total = { changed: 0, matched: 0, more: false };
    let cursor = null;
    for (let i = 0; i < BULK_BATCHES; i++) {
      const done = await postJson(`v1/watches:${action}`, { ...bulkBody(), ...extra, cursor });
      total.changed += done.changed;
      total.matched += done.matched;
      cursor = done.next_cursor;
      if (!cursor) return total;
    }
    total.more = true;
    return total;
  }

  async function actOnFilter(kind) {
    const msg = $("bulk-msg");
    const action = kind === "retry" ? "retry" : "cancel";
    const extra = kind === "abort" ? { abort: true } : {};
    const verb = { retry: "re-armed", cancel: "cancelled", abort: "cancelled and aborted" }[kind];
    try {
      const dry = await runBulk(action, { ...extra, dry_run: true });
      if (dry.changed === 0) {
        say(msg, `No watch these filters match would be ${verb} (${dry.matched} match).`, "ok");
        return;
      }
      const many = `${dry.changed}${dry.more ? "+" : ""} watch${dry.changed === 1 ? "" : "es"}`;
      if (!window.confirm(`${many} of ${dry.matched} matching will be ${verb}. Go on?`)) {
        say(msg, "Nothing done.", "ok");
        return;
      }
      const done = await runBulk(action, extra);
      say(msg, `${done.changed} watch${done.changed === 1 ? "" : "es"} ${verb}` +
        (done.more ? " (more remain: click again)." : "."), "ok");
    } catch (err) {
      say(msg, "Refused: " + err.message, "bad");
    }
    refresh();
  }

  // --- what looks stuck: live watches whose checks fail, and the oldest running ---------------

  function stuckItem(w, text) {
    const item = el("li", { "data-watch-id": w.id, title: "open this watch" },
      el("span", { class: "badge", "data-state": w.state }, w.state), " ",
      el("code", {}, w.id), " ", el("span", { class: "muted" }, `${w.provider} · ${text}`));
    item.addEventListener("click", () => openWatch(w.id));
    return item;
  }

  async function refreshStuck() {
    const [pending, running, oldest] = await Promise.all([
      getJson("v1/watches?state=pending&sort=-updated_at&limit=200"),
      getJson("v1/watches?state=running&sort=-updated_at&limit=200"),
      getJson("v1/watches?state=running&sort=created_at&limit=5"),
    ]);
    const failing = [...(pending.items || []), ...(running.items || [])]
      .filter((w) => w.errors > 0 || (w.state === "pending" && w.last_error))
      .sort((a, b) => (b.errors || 0) - (a.errors || 0)).slice(0, 10);
    $("stuck-failing").replaceChildren(...failing.map((w) =>
      stuckItem(w, `${w.errors} failed check${w.errors === 1 ? "" : "s"}: ${w.last_error || ""}`)));
    $("stuck-failing-empty").hidden = failing.length > 0;
    const old = oldest.items || [];
    $("stuck-oldest").replaceChildren(...old.map((w) =>
      stuckItem(w, `running, registered ${ago(w.created_at)}`)));
    $("stuck-oldest-empty").hidden = old.length > 0;
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
      renderProviderChoice(stats.providers);
      renderLag(stats.dispatch_lag_seconds);
      renderProviders(stats.providers);
      renderWorkers(stats.workers);
      // the page or the filters changed while this was asked: the next refresh shows the new one
      if (asked === view) {
        renderWatches(page.items || []);
        nextCursor = page.next_cursor || null;
        renderPager(matching(stats));
      }
      if (openId) await refreshDetail();
      // failed and stuck watches change rarely: fetch them when the counts move, or now and then
      const key = STATES.map((s) => counts[s] || 0).join(",");
      if (key !== failuresKey || Date.now() - failuresAt > FAILURES_EVERY_MS) {
        await Promise.all([refreshFailures(), refreshStuck()]);
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
    // the address says what to show (a shared link, a reload), not what the browser kept
    const fromUrl = readUrl();
    filters = fromUrl.filters;
    cursors = fromUrl.cursors;
    const fields = () => ({
      state: select.value, provider: $("f-provider").value,
      label: $("f-label").value.trim(), q: $("f-q").value.trim(),
    });
    const showFilters = () => {
      renderProviderChoice({});
      select.value = filters.state;
      $("f-label").value = filters.label;
      $("f-q").value = filters.q;
    };
    showFilters();
    let typing = null;
    const filtersChanged = () => {
      clearTimeout(typing);
      const wanted = fields();
      if (["state", "provider", "label", "q"].every((k) => wanted[k] === filters[k])) return false;
      changeView(wanted, [null]);
      return true;
    };
    select.addEventListener("change", filtersChanged);
    $("f-provider").addEventListener("change", filtersChanged);
    for (const input of [$("f-q"), $("f-label")]) {
      input.addEventListener("input", () => {
        clearTimeout(typing);
        typing = setTimeout(filtersChanged, 300);
      });
    }
    window.addEventListener("popstate", () => {
      const back = readUrl();
      filters = back.filters;
      showFilters();
      changeView(back.filters, back.cursors);
      openWatch(back.watch, false);
    });
    $("d-close").addEventListener("click", () => openWatch(null));
    $("d-retry").addEventListener("click", () => actOnWatch("retry"));
    $("d-cancel").addEventListener("click", () => actOnWatch("cancel"));
    $("d-abort").addEventListener("click", () => actOnWatch("abort"));
    $("bulk-retry").addEventListener("click", () => actOnFilter("retry"));
    $("bulk-cancel").addEventListener("click", () => actOnFilter("cancel"));
    $("bulk-abort").addEventListener("click", () => actOnFilter("abort"));
    if (fromUrl.watch) openWatch(fromUrl.watch, false);
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
