// linedee dashboard: the overview (#/), activity as a whole over a window, from
// /api/overview. Loaded before app.js, whose helpers (el, svg, api, duration, …) it uses.
//
// The chart is SVG drawn here rather than a vendored charting library (uPlot and the like):
// it is one stacked bar chart of at most 30 intervals, the run page's timeline is SVG
// already, and it keeps the dashboard free of third-party code to vet and update, inside the
// CSP as it stands.
"use strict";

const WINDOWS = ["1h", "24h", "7d"];
const FINISHED = ["succeeded", "failed", "cancelled"];
const CMD_COLUMNS = [
  ["cmd", "Command", "text"], ["runs", "Runs", "num"], ["attempts", "Attempts", "num"],
  ["failures", "Failures", "num"], ["retries", "Retries", "num"], ["timeouts", "Timeouts", "num"],
  ["p50_ms", "p50", "ms"], ["p95_ms", "p95", "ms"],
];

async function overviewPage(params, gen) {
  const win = WINDOWS.includes(params.get("window")) ? params.get("window") : "24h";
  const sort = CMD_COLUMNS.some((c) => c[0] === params.get("sort")) ? params.get("sort") : "attempts";
  app.dataset.view = "overview";
  delete app.dataset.loaded;
  const picker = el("div", { class: "windows", id: "window-picker" }, ...WINDOWS.map((w) =>
    el("a", { href: "#/?window=" + w + "&sort=" + sort, class: w === win ? "on" : null, "data-window": w }, "last " + w)));
  const body = el("div", { id: "overview", "data-window": win });
  app.replaceChildren(el("div", { class: "toolbar" }, el("h1", { class: "page" }, "Overview"), picker), body);
  async function tick() {
    let o;
    try {
      o = await api("/api/overview?window=" + win);
    } catch (e) {
      if (gen !== generation) return;
      showNotice("Loading the overview failed: " + e.message, true);
      timer = setTimeout(tick, 3000);
      return;
    }
    if (gen !== generation) return;
    showNotice("");
    renderOverview(body, o, win, sort);
    app.dataset.loaded = "true";
    live.hidden = false;
    timer = setTimeout(tick, 3000);
  }
  await tick();
}

// A figure the source could not compute is shown as such, never as a number.
function unavailable(o, name) {
  return el("p", { class: "muted na", "data-unavailable": name },
    "Not available: " + ((o.unavailable && o.unavailable[name]) || "this source does not compute it") + ".");
}

function figure(name, value, label, href) {
  const inner = [el("span", { class: "n" }, value), el("span", { class: "label" }, label)];
  return href
    ? el("a", { class: "figure " + name, "data-figure": name, href }, ...inner)
    : el("div", { class: "figure " + name, "data-figure": name }, ...inner);
}

function renderOverview(body, o, win, sort) {
  const runs = (q) => "#/runs?" + q;
  const counts = o.counts
    ? el("div", { class: "figures", id: "counts" },
      figure("queued", String(o.counts.queued), "queued now", runs("status=queued")),
      figure("running", String(o.counts.running), "running now", runs("status=running")),
      ...FINISHED.map((s) => figure(s, String(o.counts[s]), s, runs("status=" + s + "&window=" + win))))
    : unavailable(o, "counts");
  const ms = (v) => (v === null || v === undefined ? "–" : duration(v));
  const durations = o.duration
    ? el("div", { class: "figures", id: "durations" },
      figure("queued_now", o.queued_now === null ? "–" : String(o.queued_now), "queue depth", null),
      figure("p50", ms(o.duration.p50_ms), "p50 run duration", null),
      figure("p95", ms(o.duration.p95_ms), "p95 run duration", null))
    : unavailable(o, "duration");
  const chart = el("div", { class: "card" },
    el("h2", {}, "Runs per " + { "1h": "2 minutes", "24h": "hour", "7d": "6 hours" }[win]),
    o.series ? seriesSvg(o.series, o.now_ms) : unavailable(o, "series"),
    el("div", { class: "legend" }, ...FINISHED.map((s) => el("span", { class: s }, "finished " + s)),
      el("span", { class: "started" }, "started")));
  const table = el("div", { class: "card" }, el("h2", {}, "By command"),
    o.cmds ? cmdTable(o.cmds, win, sort) : unavailable(o, "cmds"));
  body.replaceChildren(el("div", { class: "card" }, counts, durations), chart, table);
}

function seriesSvg(series, now) {
  const width = 1000, height = 220, left = 40, bottom = 22, top = 10;
  const plotW = width - left - 10, plotH = height - top - bottom;
  const b = series.buckets;
  const max = Math.max(1, ...b.map((x) => Math.max(x.started, x.succeeded + x.failed + x.cancelled)));
  const bw = plotW / Math.max(b.length, 1);
  const y = (v) => top + plotH - (v / max) * plotH;
  const root = svg("svg", { class: "series", id: "series", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "Runs started and finished per interval, finished stacked by outcome" });
  for (const v of [0, Math.round(max / 2), max]) {
    root.append(svg("line", { class: "grid", x1: left, x2: width - 10, y1: y(v), y2: y(v) }),
      svg("text", { class: "tick", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, String(v)));
  }
  b.forEach((bucket, i) => {
    const x = left + i * bw;
    let acc = 0;
    const g = svg("g", { class: "bucket", "data-t": bucket.t, "data-started": bucket.started });
    for (const s of FINISHED) {
      const n = bucket[s];
      if (!n) continue;
      g.append(svg("rect", { class: "bar " + s, "data-outcome": s, "data-count": n,
        x: (x + 2).toFixed(1), y: y(acc + n).toFixed(1), width: Math.max(bw - 4, 1).toFixed(1),
        height: (y(acc) - y(acc + n)).toFixed(1) }));
      acc += n;
    }
    g.append(svg("title", {}, `${new Date(bucket.t).toLocaleString()}: ${bucket.started} started, ` +
      FINISHED.map((s) => `${bucket[s]} ${s}`).join(", ")));
    root.append(g);
  });
  const points = b.map((bucket, i) => `${(left + (i + 0.5) * bw).toFixed(1)},${y(bucket.started).toFixed(1)}`);
  root.append(svg("polyline", { class: "started", points: points.join(" ") }));
  const label = (t) => new Date(t).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  if (b.length) {
    root.append(svg("text", { class: "tick", x: left, y: height - 6 }, label(b[0].t)),
      svg("text", { class: "tick", x: width - 10, y: height - 6, "text-anchor": "end" }, label(now)));
  }
  return root;
}

function cmdTable(cmds, win, sort) {
  const col = CMD_COLUMNS.find((c) => c[0] === sort);
  const rows = cmds.slice().sort((a, b) => {
    if (col[2] === "text") return a.cmd.localeCompare(b.cmd);
    const av = a[sort] === null ? -1 : a[sort], bv = b[sort] === null ? -1 : b[sort];
    return bv - av || a.cmd.localeCompare(b.cmd);
  });
  const head = CMD_COLUMNS.map(([key, label]) => el("th", { "data-sort": key, class: key === sort ? "sorted" : null },
    el("a", { href: "#/?window=" + win + "&sort=" + key }, label)));
  const body = rows.map((c) => {
    const href = "#/runs?cmd=" + encodeURIComponent(c.cmd) + "&window=" + win;
    return el("tr", { class: "cmd-row", "data-cmd": c.cmd },
      el("td", { class: "mono", "data-col": "cmd" }, el("a", { href }, c.cmd || "(none)")),
      ...CMD_COLUMNS.slice(1).map(([key, , kind]) => el("td", { "data-col": key, class: kind === "num" && c[key] && key !== "runs" && key !== "attempts" ? "bad" : null },
        kind === "ms" ? (c[key] === null ? "–" : duration(c[key])) : String(c[key]))));
  });
  if (!body.length) body.push(el("tr", {}, el("td", { colspan: String(CMD_COLUMNS.length), class: "empty" }, "No attempts in this window.")));
  return el("table", { class: "runs cmds", id: "cmds" }, el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...body));
}
