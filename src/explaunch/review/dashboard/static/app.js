// explaunch dashboard: polls the JSON API and draws the page. Every text from a record goes into the DOM through
// textContent (or an attribute set with setAttribute), never as HTML: an override or error message holding markup
// shows as that text.
"use strict";

const POLL_LIVE_MS = 2000;
const POLL_FINISHED_MS = 10000;
const SWEEPS_EVERY = 5; // polls between refreshes of the sweep list
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fd6", "#e07b24", "#2e9d5b", "#d64541", "#8c6cc9", "#1fa3a3", "#b8860b", "#c2185b"];
const COUNT_NAMES = ["completed", "running", "failed", "pending", "skipped"];

const BETTER_CHOICES = [["", "as known"], ["max", "higher"], ["min", "lower"]];
const FRONT_COLOR = "#d64541";
const DOMINATED_COLOR = "#9aa3b2";

const view = {
  sweep: null, metric: null, param: null, sortKey: "num", sortAsc: true, data: null, polls: 0, timer: null,
  tradeoffX: null, tradeoffY: null, betterX: "", betterY: "",
};

const byId = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function cssToken(text) {
  return String(text).toLowerCase().replace(/[^a-z0-9]+/g, "-");
}

function filesUrl(path) {
  return "/files/" + String(path).split("/").map(encodeURIComponent).join("/");
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " m " + String(s % 60).padStart(2, "0") + " s";
  return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " m";
}

function fmtNumber(value) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3)) return value.toExponential(3);
  return String(Math.round(value * 1000) / 1000);
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}

// ---- sweeps ---------------------------------------------------------------------------------------------------
function hashParams() {
  return new URLSearchParams(window.location.hash.slice(1));
}

async function loadSweeps() {
  const data = await getJSON("/api/sweeps");
  const select = byId("sweep-select");
  const wanted = view.sweep || hashParams().get("sweep");
  const paths = data.sweeps.map((s) => s.path);
  select.replaceChildren();
  for (const sweep of data.sweeps) {
    const option = el("option", sweep.path + (sweep.live ? "  (running)" : ""));
    option.value = sweep.path;
    select.appendChild(option);
  }
  byId("sweep-picker").hidden = data.sweeps.length < 2;
  if (!paths.length) {
    view.sweep = null;
    byId("sweep-path").textContent = data.root + ": no sweep here yet";
    return;
  }
  view.sweep = paths.includes(wanted) ? wanted : paths[0];
  select.value = view.sweep;
  byId("sweep-path").textContent = view.sweep === "." ? data.root : data.root + "/" + view.sweep;
}

// ---- polling --------------------------------------------------------------------------------------------------
async function poll() {
  let live = true;
  try {
    if (view.polls % SWEEPS_EVERY === 0 || view.sweep === null) await loadSweeps();
    view.polls += 1;
    if (view.sweep !== null) {
      const query = new URLSearchParams({ sweep: view.sweep });
      if (view.metric) query.set("metric", view.metric);
      if (view.param) query.set("param", view.param);
      const data = await getJSON("/api/sweep?" + query.toString());
      view.data = data;
      live = data.live;
      render(data);
      await loadTradeoff();
    }
    byId("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    byId("updated").textContent = error.message === "HTTP 403"
      ? "this dashboard needs its token: open the URL it printed (…/?token=...)"
      : "cannot reach the dashboard server (" + error.message + "); retrying";
  }
  schedule(live ? POLL_LIVE_MS : POLL_FINISHED_MS);
}

function schedule(ms) {
  clearTimeout(view.timer);
  view.timer = setTimeout(poll, ms);
}

function pollNow() {
  clearTimeout(view.timer);
  poll();
}

// ---- rendering ------------------------------------------------------------------------------------------------
function render(data) {
  const badge = byId("live");
  badge.textContent = data.live ? "live" : "finished";
  badge.className = "badge " + (data.live ? "live" : "finished");
  const option = Array.from(byId("sweep-select").options).find((o) => o.value === data.sweep);
  if (option) option.textContent = data.sweep + (data.live ? "  (running)" : "");
  for (const name of COUNT_NAMES) byId("count-" + name).textContent = String(data.counts[name]);
  renderProgress(data);
  const stop = byId("stop-reason");
  stop.hidden = !data.stop_reason;
  stop.textContent = data.stop_reason ? "stopped early: " + data.stop_reason : "";
  const controls = byId("controls");
  controls.hidden = !data.controls || data.controls.length === 0;
  controls.textContent = (data.controls || []).join(" · ");
  renderSelect(byId("metric-select"), data.metrics, data.chart.metric);
  renderSelect(byId("param-select"), data.params, data.chart.param);
  view.metric = data.chart.metric;
  view.param = data.chart.param;
  renderMetricChart(data.chart);
  renderResources(data.resources);
  renderErrors(data.errors);
  renderAlerts(data.alerts);
  renderJobs(data);
}

function renderProgress(data) {
  const p = data.progress;
  byId("progress-fill").style.width = (100 * p.fraction).toFixed(1) + "%";
  const parts = [p.done + " / " + p.total + " jobs done"];
  if (data.live) {
    parts.push(p.parallelism + " at a time");
    parts.push(p.eta_s === null ? "time left: estimating (no job finished yet)" : "about " + fmtDuration(p.eta_s) + " left");
  } else {
    parts.push("sweep finished");
  }
  if (p.mean_duration_s !== null) parts.push("mean job " + fmtDuration(p.mean_duration_s));
  byId("progress-text").textContent = parts.join(" · ");
}

function renderSelect(select, options, value) {
  const current = Array.from(select.options).map((o) => o.value);
  if (current.length !== options.length || current.some((v, i) => v !== options[i])) {
    select.replaceChildren();
    for (const name of options) {
      const option = el("option", name);
      option.value = name;
      select.appendChild(option);
    }
  }
  if (value !== null) select.value = value;
}

function renderMetricChart(chart) {
  const series = chart.series.map((s) => ({
    label: s.label,
    points: s.points.map((p) => ({ x: p.x, label: p.label, y: p.mean, err: p.std, n: p.n })),
  }));
  drawChart(byId("metric-chart"), series, {
    xLabel: chart.param || "", yLabel: chart.metric || "", categorical: !chart.numeric, markers: true,
    empty: chart.metric ? "no completed job with this metric yet" : "no metric yet",
  });
}

function timeSeries(jobs, column) {
  return jobs.filter((j) => j[column]).map((j) => ({
    label: "job " + (j.num === null ? j.job_dir : j.num) + (j.status === "running" ? " (running)" : ""),
    points: j.t.map((t, i) => ({ x: t, y: j[column][i] })),
  }));
}

function renderResources(resources) {
  const xLabel = "s since the sweep started";
  drawChart(byId("chart-cpu"), timeSeries(resources.jobs, "cpu_percent"), {
    title: "job CPU % (100 = one core)", xLabel, empty: "no resources.csv yet",
  });
  drawChart(byId("chart-rss"), timeSeries(resources.jobs, "rss_mib"), {
    title: "job memory (RSS, MiB)", xLabel, empty: "no resources.csv yet",
  });
  const machine = resources.machine;
  const machineSeries = (names) => names.filter((n) => machine[n]).map((n) => ({
    label: n.replace("system_", "").replace(/_/g, " "),
    points: machine[n].t.map((t, i) => ({ x: t, y: machine[n].v[i] })),
  }));
  drawChart(byId("chart-machine"), machineSeries(["system_cpu_percent", "system_memory_percent"]), {
    title: "machine CPU % and memory %", xLabel, empty: "no samples yet",
  });
  const gpuNames = Object.keys(machine).filter((n) => n.startsWith("gpu"));
  const gpu = byId("chart-gpu");
  gpu.hidden = gpuNames.length === 0;
  if (gpuNames.length) drawChart(gpu, machineSeries(gpuNames), { title: "GPU utilisation % and memory %", xLabel });
}

function renderErrors(errors) {
  const body = byId("errors").tBodies[0];
  body.replaceChildren();
  for (const error of errors) {
    const row = el("tr");
    row.dataset.job = error.job_dir;
    row.appendChild(el("td", error.num === null ? error.job_dir : error.num, "num"));
    row.appendChild(el("td", error.status, "status " + cssToken(error.status)));
    row.appendChild(el("td", error.type));
    row.appendChild(el("td", error.message, "message"));
    const cell = el("td");
    if (error.traceback) {
      const link = el("a", "traceback");
      link.setAttribute("href", filesUrl(error.traceback));
      link.setAttribute("target", "_blank");
      link.setAttribute("rel", "noopener");
      cell.appendChild(link);
    }
    row.appendChild(cell);
    body.appendChild(row);
  }
  byId("no-errors").hidden = errors.length > 0;
  byId("errors").hidden = errors.length === 0;
  byId("error-count").textContent = errors.length ? String(errors.length) : "";
}

function renderAlerts(alerts) {
  const list = byId("alerts");
  list.replaceChildren();
  for (const alert of alerts) {
    const job = "job " + (alert.num === null ? alert.job_dir : alert.num) + (alert.live ? " (running)" : "");
    list.appendChild(el("li", job + ": " + alert.message));
  }
  byId("no-alerts").hidden = alerts.length > 0;
}

// ---- job table ------------------------------------------------------------------------------------------------
function distinctOverrides(jobs) {
  // Overrides every job shares say nothing about one job: show the others.
  if (jobs.length < 2) return (job) => job.overrides;
  const common = new Set(jobs[0].overrides);
  for (const job of jobs.slice(1)) {
    const own = new Set(job.overrides);
    for (const o of Array.from(common)) if (!own.has(o)) common.delete(o);
  }
  return (job) => {
    const shown = job.overrides.filter((o) => !common.has(o));
    return shown.length ? shown : job.overrides;
  };
}

function sortValue(job, key) {
  if (key.startsWith("metric:")) return job.metrics[key.slice(7)];
  if (key === "overrides") return job.overrides.join(" ");
  return job[key];
}

function compareJobs(a, b) {
  const va = sortValue(a, view.sortKey);
  const vb = sortValue(b, view.sortKey);
  const missingA = va === null || va === undefined;
  const missingB = vb === null || vb === undefined;
  if (missingA || missingB) return missingA === missingB ? 0 : missingA ? 1 : -1; // missing last either way
  const order = typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb));
  return view.sortAsc ? order : -order;
}

function renderJobs(data) {
  const columns = [
    ["num", "job"], ["status", "status"], ["overrides", "overrides"], ["duration_s", "duration"],
    ...data.table_metrics.map((m) => ["metric:" + m, m]), ["error", "error"],
  ];
  const head = byId("jobs").tHead.rows[0];
  head.replaceChildren();
  for (const [key, label] of columns) {
    const th = el("th", label);
    if (key === view.sortKey) th.className = "sorted" + (view.sortAsc ? " asc" : "");
    th.addEventListener("click", () => {
      view.sortAsc = view.sortKey === key ? !view.sortAsc : true;
      view.sortKey = key;
      renderJobs(view.data);
    });
    head.appendChild(th);
  }
  const shown = distinctOverrides(data.jobs);
  const body = byId("jobs").tBodies[0];
  body.replaceChildren();
  for (const job of data.jobs.slice().sort(compareJobs)) {
    const row = el("tr");
    row.dataset.status = job.status;
    row.dataset.job = job.job_dir;
    row.appendChild(el("td", job.num === null ? job.job_dir : job.num, "num"));
    row.appendChild(el("td", job.status, "status " + cssToken(job.status)));
    const overrides = el("td", shown(job).join(" "), "overrides");
    overrides.setAttribute("title", job.overrides.join(" "));
    row.appendChild(overrides);
    row.appendChild(el("td", job.duration_s === null ? "" : fmtDuration(job.duration_s), "num"));
    for (const metric of data.table_metrics) row.appendChild(el("td", fmtNumber(job.metrics[metric]), "num"));
    row.appendChild(el("td", job.error || "", "message"));
    body.appendChild(row);
  }
}

// ---- trade-off ------------------------------------------------------------------------------------------------
async function loadTradeoff() {
  if (view.sweep === null) return;
  const query = new URLSearchParams({ sweep: view.sweep });
  if (view.tradeoffX) query.set("x", view.tradeoffX);
  if (view.tradeoffY) query.set("y", view.tradeoffY);
  if (view.betterX) query.set("better_x", view.betterX);
  if (view.betterY) query.set("better_y", view.betterY);
  renderTradeoff(await getJSON("/api/tradeoff?" + query.toString()));
}

function renderBetter(select, known, value) {
  select.replaceChildren();
  for (const [choice, label] of BETTER_CHOICES) {
    const text = choice === "" ? label + " (" + (known === "max" ? "higher" : known === "min" ? "lower" : "unknown") + ")" : label;
    const option = el("option", text);
    option.value = choice;
    select.appendChild(option);
  }
  select.value = value;
}

function renderTradeoff(data) {
  renderSelect(byId("tradeoff-x"), data.metrics, data.x);
  renderSelect(byId("tradeoff-y"), data.metrics, data.y);
  view.tradeoffX = data.x;
  view.tradeoffY = data.y;
  const known = data.known || {};
  renderBetter(byId("tradeoff-better-x"), known[data.x], view.betterX);
  renderBetter(byId("tradeoff-better-y"), known[data.y], view.betterY);
  const note = byId("tradeoff-note");
  if (data.error) {
    note.textContent = data.error;
    note.className = "warning";
  } else {
    const word = (axis) => (data.better[axis] === "max" ? "higher " : "lower ") + data[axis];
    const onFront = data.points.filter((p) => p.on_front).length;
    note.textContent = "better: " + word("x") + ", " + word("y") + " · " + onFront + " of " + data.points.length +
      " configurations on the Pareto front (red) · mean ± std over seeds, completed jobs";
    note.className = "muted small";
  }
  drawTradeoff(byId("tradeoff-chart"), data);
}

function drawTradeoff(svg, data) {
  svg.replaceChildren();
  const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
  const points = data.error ? [] : data.points;
  if (!points.length) {
    svg.appendChild(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
      data.error ? "no trade-off to show" : "no completed job with both metrics yet"));
    return;
  }
  const margin = { left: 64, right: 24, top: 24, bottom: 40 };
  const spread = (p, axis, sign) => p[axis + "_mean"] + sign * (p[axis + "_std"] || 0);
  const xTicks = ticks(Math.min(...points.map((p) => spread(p, "x", -1))), Math.max(...points.map((p) => spread(p, "x", 1))), 6);
  const yTicks = ticks(Math.min(...points.map((p) => spread(p, "y", -1))), Math.max(...points.map((p) => spread(p, "y", 1))), 4);
  const [xMin, xMax, yMin, yMax] = [xTicks[0], xTicks[xTicks.length - 1], yTicks[0], yTicks[yTicks.length - 1]];
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const sx = (x) => margin.left + ((x - xMin) / (xMax - xMin || 1)) * plotW;
  const sy = (y) => margin.top + plotH - ((y - yMin) / (yMax - yMin || 1)) * plotH;
  for (const y of yTicks) {
    svg.appendChild(svgEl("line", { x1: margin.left, x2: width - margin.right, y1: sy(y), y2: sy(y), class: "grid" }));
    svg.appendChild(svgEl("text", { x: margin.left - 6, y: sy(y) + 4, "text-anchor": "end" }, fmtNumber(y)));
  }
  for (const x of xTicks) {
    svg.appendChild(svgEl("text", { x: sx(x), y: margin.top + plotH + 14, "text-anchor": "middle" }, fmtNumber(x)));
  }
  svg.appendChild(svgEl("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: margin.top + plotH, class: "axis" }));
  svg.appendChild(svgEl("line", {
    x1: margin.left, x2: width - margin.right, y1: margin.top + plotH, y2: margin.top + plotH, class: "axis",
  }));
  const axisLabel = (axis) => data[axis] + " (" + (data.better[axis] === "max" ? "higher" : "lower") + " is better)";
  svg.appendChild(svgEl("text", { x: margin.left + plotW / 2, y: margin.top + plotH + 30, "text-anchor": "middle" },
    axisLabel("x") + " →"));
  svg.appendChild(svgEl("text", { x: margin.left - 6, y: 12 }, "↑ " + axisLabel("y")));

  const front = points.filter((p) => p.on_front).sort((a, b) => a.x_mean - b.x_mean);
  if (front.length > 1) {
    const d = front.map((p, i) => (i ? "L" : "M") + sx(p.x_mean).toFixed(1) + " " + sy(p.y_mean).toFixed(1)).join(" ");
    svg.appendChild(svgEl("path", { d, class: "front" }));
  }
  for (const p of points) {
    const color = p.on_front ? FRONT_COLOR : DOMINATED_COLOR;
    const cx = sx(p.x_mean);
    const cy = sy(p.y_mean);
    if (p.x_std) {
      svg.appendChild(svgEl("line", { x1: sx(spread(p, "x", -1)), x2: sx(spread(p, "x", 1)), y1: cy, y2: cy, class: "errbar", stroke: color }));
    }
    if (p.y_std) {
      svg.appendChild(svgEl("line", { x1: cx, x2: cx, y1: sy(spread(p, "y", -1)), y2: sy(spread(p, "y", 1)), class: "errbar", stroke: color }));
    }
    const dot = svgEl("circle", { cx, cy, r: 4.5, fill: color, class: "point" + (p.on_front ? " on-front" : "") });
    dot.appendChild(svgEl("title", {}, p.label + ": " + data.x + " " + fmtNumber(p.x_mean) + " ± " +
      fmtNumber(p.x_std || 0) + ", " + data.y + " " + fmtNumber(p.y_mean) + " ± " + fmtNumber(p.y_std || 0) +
      " (n=" + p.n + ")" + (p.on_front ? ", on the Pareto front" : "")));
    svg.appendChild(dot);
    svg.appendChild(svgEl("text", { x: cx + 7, y: cy - 7, class: "point-label" }, p.label));
  }
}

// ---- charts (inline SVG) --------------------------------------------------------------------------------------
function niceStep(raw) {
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}

function ticks(min, max, count) {
  if (!(max > min)) { min -= 1; max += 1; }
  const step = niceStep((max - min) / count);
  const out = [];
  const last = Math.ceil(max / step - 1e-9) * step;
  for (let v = Math.floor(min / step + 1e-9) * step; v <= last + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

function drawChart(svg, series, options) {
  svg.replaceChildren();
  const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
  const top = options.title ? 22 : 10;
  const legendRows = Math.ceil(series.length / 4);
  const margin = { left: 58, right: 14, top, bottom: 34 + 15 * legendRows };
  if (options.title) svg.appendChild(svgEl("text", { x: margin.left, y: 14, class: "title" }, options.title));
  const points = series.flatMap((s) => s.points).filter((p) => p.y !== null && p.y !== undefined && isFinite(p.y));
  if (!points.length) {
    svg.appendChild(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
      options.empty || "no data yet"));
    return;
  }
  const categories = options.categorical ? Array.from(new Set(points.map((p) => String(p.x)))).sort() : null;
  const xOf = (p) => (categories ? categories.indexOf(String(p.x)) : p.x);
  const xs = points.map(xOf);
  const lows = points.map((p) => p.y - (p.err || 0));
  const highs = points.map((p) => p.y + (p.err || 0));
  let xMin = Math.min(...xs);
  let xMax = Math.max(...xs);
  if (categories) { xMin -= 0.5; xMax += 0.5; }
  if (xMax === xMin) { xMin -= 1; xMax += 1; }
  const yTicks = ticks(Math.min(0, ...lows), Math.max(...highs), 4);
  const yMin = yTicks[0];
  const yMax = yTicks[yTicks.length - 1];
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const sx = (x) => margin.left + ((x - xMin) / (xMax - xMin)) * plotW;
  const sy = (y) => margin.top + plotH - ((y - yMin) / (yMax - yMin || 1)) * plotH;

  for (const y of yTicks) {
    svg.appendChild(svgEl("line", { x1: margin.left, x2: width - margin.right, y1: sy(y), y2: sy(y), class: "grid" }));
    svg.appendChild(svgEl("text", { x: margin.left - 6, y: sy(y) + 4, "text-anchor": "end" }, fmtNumber(y)));
  }
  const xTicks = categories
    ? categories.map((c, i) => [i, c])
    : ticks(xMin, xMax, 6).filter((x) => x >= xMin && x <= xMax).map((x) => [x, fmtNumber(x)]);
  for (const [x, label] of xTicks) {
    svg.appendChild(svgEl("text", { x: sx(x), y: margin.top + plotH + 14, "text-anchor": "middle" }, label));
  }
  svg.appendChild(svgEl("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: margin.top + plotH, class: "axis" }));
  svg.appendChild(svgEl("line", {
    x1: margin.left, x2: width - margin.right, y1: margin.top + plotH, y2: margin.top + plotH, class: "axis",
  }));
  if (options.xLabel) {
    svg.appendChild(svgEl("text", { x: margin.left + plotW / 2, y: margin.top + plotH + 28, "text-anchor": "middle" },
      options.xLabel));
  }
  if (options.yLabel) {
    const y = margin.top + plotH / 2;
    svg.appendChild(svgEl("text", { x: 12, y, "text-anchor": "middle", transform: "rotate(-90 12 " + y + ")" },
      options.yLabel));
  }

  series.forEach((s, index) => {
    const color = COLORS[index % COLORS.length];
    let d = "";
    let pen = "M";
    for (const p of s.points) {
      if (p.y === null || p.y === undefined || !isFinite(p.y)) { pen = "M"; continue; }
      d += pen + sx(xOf(p)).toFixed(1) + " " + sy(p.y).toFixed(1) + " ";
      pen = "L";
    }
    if (d) svg.appendChild(svgEl("path", { d, class: "series", stroke: color }));
    if (!options.markers) return;
    for (const p of s.points) {
      if (p.y === null || !isFinite(p.y)) continue;
      const cx = sx(xOf(p));
      if (p.err) {
        const lo = sy(p.y - p.err);
        const hi = sy(p.y + p.err);
        svg.appendChild(svgEl("line", { x1: cx, x2: cx, y1: lo, y2: hi, class: "errbar", stroke: color }));
        svg.appendChild(svgEl("line", { x1: cx - 4, x2: cx + 4, y1: lo, y2: lo, class: "errbar", stroke: color }));
        svg.appendChild(svgEl("line", { x1: cx - 4, x2: cx + 4, y1: hi, y2: hi, class: "errbar", stroke: color }));
      }
      const dot = svgEl("circle", { cx, cy: sy(p.y), r: 4, fill: color, class: "point" });
      const label = p.label !== undefined ? p.label : fmtNumber(p.x);
      dot.appendChild(svgEl("title", {}, s.label + " @ " + label + ": " + fmtNumber(p.y) +
        (p.n ? " ± " + fmtNumber(p.err) + " (n=" + p.n + ")" : "")));
      svg.appendChild(dot);
    }
  });

  series.forEach((s, index) => {
    const x = margin.left + (index % 4) * (plotW / 4);
    const y = height - 15 * legendRows + 15 * Math.floor(index / 4) + 4;
    const color = COLORS[index % COLORS.length];
    svg.appendChild(svgEl("rect", { x, y: y - 8, width: 10, height: 10, fill: color }));
    const text = s.label.length > 28 ? s.label.slice(0, 27) + "…" : s.label;
    const label = svgEl("text", { x: x + 14, y: y + 1 }, text);
    label.appendChild(svgEl("title", {}, s.label));
    svg.appendChild(label);
  });
}

// ---- start ----------------------------------------------------------------------------------------------------
// The token came in the URL and is now a cookie: out of the address bar, the history and any screenshot.
if (new URLSearchParams(window.location.search).has("token")) {
  window.history.replaceState(null, "", window.location.pathname + window.location.hash);
}
byId("sweep-select").addEventListener("change", (event) => {
  view.sweep = event.target.value;
  view.metric = null;
  view.param = null;
  Object.assign(view, { tradeoffX: null, tradeoffY: null, betterX: "", betterY: "" });
  window.location.hash = new URLSearchParams({ sweep: view.sweep }).toString();
  pollNow();
});
byId("metric-select").addEventListener("change", (event) => { view.metric = event.target.value; pollNow(); });
byId("param-select").addEventListener("change", (event) => { view.param = event.target.value; pollNow(); });
for (const [id, key] of [["tradeoff-x", "tradeoffX"], ["tradeoff-y", "tradeoffY"], ["tradeoff-better-x", "betterX"],
  ["tradeoff-better-y", "betterY"]]) {
  byId(id).addEventListener("change", (event) => {
    view[key] = event.target.value;
    if (key === "tradeoffX") view.betterX = "";
    if (key === "tradeoffY") view.betterY = "";
    loadTradeoff().catch(() => {});
  });
}
poll();
