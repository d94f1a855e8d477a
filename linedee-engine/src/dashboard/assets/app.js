// linedee dashboard: the overview (#/, in overview.js), a runs list (#/runs) and a run page
// (#/runs/{id}), over the JSON API.
// Everything from the API is put in the page with textContent, never as HTML.
"use strict";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const OUTCOMES = ["succeeded", "failed", "timed_out", "cancelled", "interrupted", "running"];
const TOKEN_KEY = "linedee-dashboard-token";
const app = document.getElementById("app");
const live = document.getElementById("live");
const notice = document.getElementById("notice");
let timer = null;
let generation = 0;

// A token given as ?token= goes to sessionStorage and out of the address bar.
(function takeToken() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.hash);
  }
})();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60), rs = Math.floor(s % 60);
  if (m < 60) return m + "m " + String(rs).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function ms(rfc3339) {
  return rfc3339 ? Date.parse(rfc3339) : null;
}

function badge(status) {
  return el("span", { class: "badge " + status, "data-status": status }, status.replace("_", " "));
}

function showNotice(text, isError) {
  notice.textContent = text;
  notice.className = isError ? "notice error" : "notice";
  notice.hidden = !text;
}

async function api(path, options) {
  const resp = await fetch(path, Object.assign({ cache: "no-store" }, options || {}));
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (!resp.ok) {
    const err = new Error((body && body.error) || resp.status + " " + resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function stopPolling(done) {
  if (timer) clearTimeout(timer);
  timer = null;
  live.hidden = done !== false;
}

function route() {
  generation += 1;
  stopPolling(true);
  showNotice("");
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const m = path.match(/^\/runs\/([0-9A-Za-z_-]{1,64})$/);
  if (m) return runPage(m[1], generation);
  const params = new URLSearchParams(query || "");
  // `#/?status=…` was the runs list before the overview: such links still lead there.
  if (path === "/runs" || params.has("status") || params.has("before")) return runsPage(params, generation);
  return overviewPage(params, generation);
}

// ---- Runs list -------------------------------------------------------------------------

const FILTERS = ["status", "window", "q", "cmd"];

async function runsPage(params, gen) {
  const f = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  const before = params.get("before") || "";
  // The filter state lives in the URL, so a filtered list is a link to share.
  const go = (changes) => {
    const q = new URLSearchParams();
    for (const k of FILTERS) {
      const v = k in changes ? changes[k] : f[k];
      if (v) q.set(k, v);
    }
    location.hash = "#/runs" + (q.toString() ? "?" + q.toString() : "");
  };
  const select = (id, options, value, key) => {
    const s = el("select", { id }, ...options.map(([v, label]) => {
      const o = el("option", { value: v }, label);
      if (v === value) o.selected = true;
      return o;
    }));
    s.addEventListener("change", () => go({ [key]: s.value }));
    return s;
  };
  const filter = select("status-filter", [["", "all statuses"], ...STATUSES.map((s) => [s, s])], f.status, "status");
  const windowFilter = select("window-filter", [["", "any time"], ["1h", "last 1h"], ["24h", "last 24h"], ["7d", "last 7d"]], f.window, "window");
  const search = el("input", { id: "search", type: "search", placeholder: "title or trigger key starts with…", value: f.q });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") go({ q: search.value.trim() }); });
  search.addEventListener("change", () => { if (search.value.trim() !== f.q) go({ q: search.value.trim() }); });
  const jump = el("input", { id: "jump", type: "text", placeholder: "run id", size: "28" });
  jump.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const id = jump.value.trim();
    if (/^[0-9A-Za-z_-]{1,64}$/.test(id)) location.hash = "#/runs/" + id;
    else showNotice("`" + id + "` is not a run id: 1 to 64 of 0-9, A-Z, a-z, _ and -.", true);
  });
  const cmdChip = f.cmd ? el("span", { class: "chip", id: "cmd-filter", "data-cmd": f.cmd }, "cmd ", el("code", {}, f.cmd), " ",
    el("a", { href: "#", id: "clear-cmd" }, "×")) : null;
  if (cmdChip) cmdChip.querySelector("a").addEventListener("click", (e) => { e.preventDefault(); go({ cmd: "" }); });
  const tbody = el("tbody");
  const pager = el("div", { class: "pager" });
  app.replaceChildren(
    el("div", { class: "toolbar" }, el("label", {}, "Status ", filter), el("label", {}, "Window ", windowFilter),
      el("label", {}, "Search ", search), cmdChip, el("label", { class: "jump" }, "Go to run ", jump)),
    el("table", { class: "runs", id: "runs" },
      el("thead", {}, el("tr", {}, ...["Status", "Title", "Trigger key", "Started", "Duration"].map((h) => el("th", {}, h)))),
      tbody),
    pager);
  app.dataset.view = "runs";
  const status = f.status;

  async function load() {
    const q = new URLSearchParams();
    for (const k of FILTERS) if (f[k]) q.set(k, f[k]);
    if (before) q.set("before", before);
    let page;
    try {
      page = await api("/api/runs?" + q.toString());
    } catch (e) {
      if (gen === generation) showNotice("Loading runs failed: " + e.message, true);
      return;
    }
    if (gen !== generation) return;
    showNotice("");
    const now = Date.now();
    const rows = page.runs.map((r) => {
      const end = r.finished_ms || (r.started_ms ? now : null);
      return el("tr", { class: "run-row", "data-run-id": r.run_id, "data-status": r.status },
        el("td", {}, badge(r.status)),
        el("td", { class: "title" }, el("a", { href: "#/runs/" + r.run_id }, r.title || r.run_id)),
        el("td", { class: "mono" }, r.trigger_key),
        el("td", {}, when(r.started_ms || r.created_ms)),
        el("td", {}, r.started_ms ? duration(end - r.started_ms) : ""));
    });
    tbody.replaceChildren(...rows);
    if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "empty" }, FILTERS.some((k) => f[k]) ? "No runs match." : "No runs yet.")));
    const kept = new URLSearchParams();
    for (const k of FILTERS) if (f[k]) kept.set(k, f[k]);
    const base = "#/runs?" + (kept.toString() ? kept.toString() + "&" : "");
    pager.replaceChildren();
    if (before) pager.append(el("a", { href: base.replace(/[&?]$/, ""), id: "newest" }, "« Newest"));
    if (page.next) pager.append(el("a", { href: base + "before=" + page.next, id: "older" }, "Older »"));
    app.dataset.loaded = "true";
    // The first page follows new runs; older pages hold still.
    if (!before) {
      live.hidden = false;
      timer = setTimeout(load, 2000);
    }
  }
  await load();
}

// ---- Run page --------------------------------------------------------------------------

const logs = new Map(); // "task/attempt" -> {pre, offset, done, busy}
const opened = new Map(); // "task/attempt" -> bool, when the user toggled it

async function runPage(id, gen) {
  app.dataset.view = "run";
  delete app.dataset.loaded;
  app.replaceChildren(el("p", { class: "muted" }, "Loading run " + id + "…"));
  logs.clear();
  opened.clear();
  async function tick() {
    let doc;
    try {
      doc = await api("/api/runs/" + encodeURIComponent(id));
    } catch (e) {
      if (gen !== generation) return;
      if (e.status === 404 || e.status === 400) {
        app.replaceChildren(el("p", { class: "error-text", id: "not-found" }, e.message));
        stopPolling(true);
        return;
      }
      showNotice("Refreshing failed: " + e.message, true);
      timer = setTimeout(tick, 1000);
      return;
    }
    if (gen !== generation) return;
    renderRun(doc);
    const active = doc.run.status === "queued" || doc.run.status === "running";
    await Promise.all(doc.attempts.map((a) => pumpLog(a)));
    if (gen !== generation) return;
    app.dataset.loaded = "true";
    if (active) {
      live.hidden = false;
      timer = setTimeout(tick, 1000);
    } else {
      stopPolling(true);
    }
  }
  await tick();
}

function renderRun(doc) {
  const run = doc.run;
  const tasks = run.steps.flatMap((s) => s.tasks);
  const start = ms(run.started_at) || ms(run.created_at);
  const end = ms(run.finished_at) || (run.status === "queued" || run.status === "running" ? doc.now_ms : start);
  const facts = el("dl", { class: "facts" });
  const fact = (k, v) => { if (v) facts.append(el("dt", {}, k), el("dd", {}, v)); };
  fact("Run id", el("code", {}, run.run_id));
  fact("Trigger", el("code", {}, run.trigger.key));
  fact("Kind", run.trigger.kind);
  fact("Created", when(ms(run.created_at)));
  fact("Started", when(ms(run.started_at)));
  fact("Finished", when(ms(run.finished_at)));
  fact("Duration", run.started_at ? duration(end - start) : "");
  const actions = el("div", { class: "actions" });
  if (run.status === "queued" || run.status === "running") {
    actions.append(actionButton(run.run_id, "cancel", "Cancel run", "danger"));
  }
  if (run.status === "failed" || run.status === "cancelled") {
    actions.append(actionButton(run.run_id, "retry", "Retry run", ""));
  }
  const head = el("div", { class: "card run-head", id: "run", "data-run-id": run.run_id, "data-status": run.status },
    el("div", {}, el("a", { href: "#/runs" }, "← Runs")),
    el("h1", {}, run.title || run.run_id, " ", badge(run.status)),
    run.error ? el("div", { class: "error-text", id: "run-error" }, run.error) : null,
    facts, actions);
  const timeline = el("div", { class: "card" }, el("h2", {}, "Timeline"),
    timelineSvg(tasks, doc.attempts, start, end, doc.now_ms),
    el("div", { class: "legend" }, ...OUTCOMES.map((o) => el("span", { class: o }, o.replace("_", " ")))));
  const sections = tasks.map((t) => taskSection(t, doc.attempts.filter((a) => a.task_id === t.task_id)));
  app.replaceChildren(head, timeline, el("div", { id: "tasks" }, ...sections));
}

function timelineSvg(tasks, attempts, start, end, now) {
  const labelW = 220, width = 1000, rowH = 26, top = 24;
  const plotW = width - labelW - 10;
  const first = Math.min(start || now, ...attempts.map((a) => a.started_ms));
  const last = Math.max(end || now, ...attempts.map((a) => a.finished_ms || now));
  const span = Math.max(last - first, 1);
  const x = (t) => labelW + ((t - first) / span) * plotW;
  const height = top + Math.max(tasks.length, 1) * rowH + 6;
  const root = svg("svg", { class: "timeline", id: "timeline", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Timeline: one bar per attempt" });
  for (let i = 0; i <= 4; i++) {
    const t = first + (span * i) / 4;
    root.append(svg("line", { class: "grid", x1: x(t), x2: x(t), y1: top - 6, y2: height }),
      svg("text", { class: "tick", x: x(t), y: 12, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, "+" + duration(Math.round(t - first))));
  }
  tasks.forEach((task, row) => {
    const y = top + row * rowH;
    root.append(svg("text", { x: 0, y: y + 16 }, clip(task.name || task.cmd, 30)));
    for (const a of attempts.filter((a) => a.task_id === task.task_id)) {
      const outcome = a.outcome || "running";
      const x0 = x(a.started_ms), x1 = x(a.finished_ms || now);
      const bits = [`${task.name || task.cmd} · attempt ${a.attempt}`, outcome.replace("_", " "),
        duration((a.finished_ms || now) - a.started_ms)];
      if (a.exit_code !== null && a.exit_code !== undefined) bits.push("exit " + a.exit_code);
      if (a.error) bits.push(a.error);
      root.append(svg("rect", {
        class: "attempt " + outcome, id: `bar-${a.task_id}-${a.attempt}`,
        "data-task-id": a.task_id, "data-attempt": a.attempt, "data-outcome": outcome,
        x: x0.toFixed(1), y: y + 3, width: Math.max(x1 - x0, 3).toFixed(1), height: rowH - 8, rx: 3,
      }, svg("title", {}, bits.join(" · "))));
    }
  });
  return root;
}

function clip(s, n) {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

function taskSection(task, attempts) {
  const facts = el("dl", { class: "facts" });
  const fact = (k, v, cls) => {
    if (v !== null && v !== undefined && v !== "") facts.append(el("dt", {}, k), el("dd", { class: cls || null }, v));
  };
  fact("State", badge(task.status));
  fact("Task id", el("code", {}, task.task_id));
  fact("Command", el("code", {}, task.cmd));
  fact("Machine", task.machine);
  fact("Attempts", String(task.attempts));
  fact("Exit code", task.exit_code === null || task.exit_code === undefined ? "" : String(task.exit_code), "exit-code");
  fact("Failure reason", task.error, "error-text failure");
  if (task.state !== null && task.state !== undefined) fact("ld_state", el("code", {}, JSON.stringify(task.state)));
  const section = el("section", { class: "card task", id: "task-" + task.task_id, "data-task-id": task.task_id, "data-status": task.status },
    el("h3", {}, task.name || task.cmd), facts);
  attempts.forEach((a, i) => {
    const key = a.task_id + "/" + a.attempt;
    let entry = logs.get(key);
    if (!entry) {
      entry = { pre: el("pre", { class: "log", "data-task-id": a.task_id, "data-attempt": a.attempt }), offset: 0, done: false, busy: false };
      logs.set(key, entry);
    }
    const outcome = a.outcome || "running";
    const details = el("details", { class: "attempt-log" },
      el("summary", {}, `Attempt ${a.attempt} · ${outcome.replace("_", " ")}` + (a.exit_code !== null && a.exit_code !== undefined ? ` · exit ${a.exit_code}` : "")),
      entry.pre);
    details.open = opened.has(key) ? opened.get(key) : i === attempts.length - 1;
    details.addEventListener("toggle", () => opened.set(key, details.open));
    section.append(details);
  });
  return section;
}

// Reads an attempt's log from where the last read stopped; a running attempt is read again
// at the next tick (the live tail).
async function pumpLog(a) {
  const entry = logs.get(a.task_id + "/" + a.attempt);
  if (!entry || entry.done || entry.busy) return;
  entry.busy = true;
  try {
    for (;;) {
      let slice;
      try {
        slice = await api(`/api/logs/${encodeURIComponent(a.task_id)}/${a.attempt}?offset=${entry.offset}`);
      } catch (e) {
        if (e.status === 404 && a.outcome) {
          entry.pre.textContent = "(no log)";
          entry.done = true;
        }
        return;
      }
      if (slice.text) entry.pre.append(slice.text);
      entry.offset = slice.next_offset;
      if (entry.offset >= slice.size || slice.next_offset === slice.offset) {
        if (a.outcome) entry.done = true;
        if (!entry.pre.textContent) entry.pre.textContent = a.outcome ? "(empty)" : "";
        return;
      }
    }
  } finally {
    entry.busy = false;
  }
}

function actionButton(runId, action, label, cls) {
  const b = el("button", { class: "action " + cls, "data-action": action, id: action + "-button" }, label);
  b.addEventListener("click", async () => {
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      token = prompt("Dashboard token (in the data directory's dashboard-token file):");
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token.trim());
    }
    b.disabled = true;
    try {
      await api(`/api/runs/${encodeURIComponent(runId)}/${action}`, {
        method: "POST", headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) },
      });
      route();
      showNotice(action === "cancel" ? "Cancel requested." : "Retry requested.");
    } catch (e) {
      if (e.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      showNotice(`${action} failed: ${e.message}`, true);
      b.disabled = false;
    }
  });
  return b;
}

window.addEventListener("hashchange", route);
route();
