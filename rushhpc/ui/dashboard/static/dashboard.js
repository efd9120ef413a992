// rushhpc dashboard: plain browser JavaScript, no build step. Every value from Redis is put in
// the page with textContent (never as HTML): worker reasons and log messages are arbitrary text.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const S = {
    config: null, network: null, es: null, pollTimer: null, lastFinished: -1, lastLogId: null,
    logLevel: "", objective: "", direction: "", plot: null, plotKey: "", results: { state: "finished", sort: "", order: "desc", offset: 0, limit: 100 },
    lastRefresh: 0, refreshTimer: null, pendingStop: null, snapshot: null, problem: false,
  };
  const LIMIT_LOG_ROWS = 1000;
  const STATE_COLORS = {
    running: "#16a34a", terminated: "#64748b", failed: "#dc2626", killed: "#ea580c", lost: "#7c3aed",
    pending: "#0284c7", starting: "#0284c7", held: "#0284c7", suspended: "#ca8a04",
  };

  // ------------------------------------------------------------------ helpers
  // The state names come from /api/config (`states`, from rushhpc/core/states.py): never a list spelled here.
  function taskTotal(t) { return S.config.states.task.reduce((n, s) => n + (t[s] || 0), 0); }
  function isAlive(state) { return S.config.states.alive.includes(state); }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v; else if (k === "title") e.title = v; else e.setAttribute(k, v === true ? "" : v);
    }
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmtNum(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(+v.toPrecision(5));
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function fmtAge(s) {
    if (s === null || s === undefined) return null;
    if (s < 120) return s.toFixed(1) + "s";
    if (s < 7200) return (s / 60).toFixed(0) + "m";
    return (s / 3600).toFixed(1) + "h";
  }
  function fmtTime(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; }
  function enc(s) { return encodeURIComponent(s); }
  function netPath(p) { return "/api/" + enc(S.network) + p; }
  function banner(msg) { const b = $("banner"); b.textContent = msg || ""; b.hidden = !msg; }

  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ credentials: "same-origin", headers: { accept: "application/json" } }, opts || {}));
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = null; }
    if (r.status === 401) { showLogin(); throw new Error("the access token is needed"); }
    if (!r.ok) throw new Error((doc && doc.error) || ("HTTP " + r.status));
    return doc;
  }

  // ------------------------------------------------------------------ start, login, networks
  async function start() {
    const cfg = await api("/api/config");
    if (cfg.auth_required && !cfg.authenticated) { showLogin(); return; }
    S.config = cfg;
    $("login").hidden = true;
    $("main").hidden = false;
    $("network-label").hidden = false;
    $("control-mode").hidden = false;
    $("redis").textContent = "Redis " + cfg.redis;
    const mode = $("control-mode");
    mode.textContent = cfg.allow_control ? "control enabled" : "read only";
    mode.classList.toggle("on", !!cfg.allow_control);
    mode.title = cfg.allow_control ? "the stop buttons act on workers" : "start with --allow-control to enable the stop buttons";
    const wanted = new URLSearchParams(location.search).get("network") || cfg.default_network;
    await loadNetworks(wanted);
    setInterval(() => loadNetworks(null).catch(() => {}), 5000);
    bindControls();
  }

  function showLogin() {
    $("main").hidden = true;
    $("login").hidden = false;
    $("status").textContent = "locked";
    $("token-input").focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const token = $("token-input").value.trim();
    const r = await fetch("/api/login", {
      method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: token }),
    });
    $("token-input").value = "";
    if (!r.ok) {
      const doc = await r.json().catch(() => ({}));
      const e = $("login-error"); e.textContent = doc.error || "refused"; e.hidden = false;
      return;
    }
    $("login-error").hidden = true;
    start().catch((e) => banner(e.message));
  }

  async function loadNetworks(wanted) {
    const doc = await api("/api/networks");
    const sel = $("network-select");
    const current = wanted || S.network;
    const ids = doc.networks.map((n) => n.network_id);
    sel.textContent = "";
    for (const n of doc.networks) {
      const t = n.tasks, w = n.workers;
      const label = `${n.network_id} (${w.running} running, ${t.finished}/${taskTotal(t)} done)`;
      sel.appendChild(el("option", { value: n.network_id }, label));
    }
    if (!ids.length) {
      sel.appendChild(el("option", { value: "" }, "no networks"));
      banner("no networks on Redis at " + doc.redis);
      return;
    }
    const pick = ids.includes(current) ? current : ids[0];
    sel.value = pick;
    if (pick !== S.network) selectNetwork(pick);
    else if (current && !ids.includes(current)) banner(`network ${current} no longer exists`);
  }

  function selectNetwork(id) {
    S.network = id;
    S.lastFinished = -1; S.lastLogId = null; S.objective = ""; S.direction = ""; S.results.offset = 0;
    S.results = { state: $("results-state").value, sort: "", order: "desc", offset: 0, limit: 100 }; S.snapshot = null;
    $("logs-body").textContent = ""; $("results-table").tHead.rows[0].textContent = "";
    $("results-table").tBodies[0].textContent = "";
    const url = new URL(location.href); url.searchParams.set("network", id); history.replaceState(null, "", url);
    document.title = id + " · rushhpc dashboard";
    banner("");
    connect();
    refreshAll(true);
  }

  // ------------------------------------------------------------------ live updates
  function connect() {
    if (S.es) { S.es.close(); S.es = null; }
    if (S.pollTimer) { clearInterval(S.pollTimer); S.pollTimer = null; }
    const poll = new URLSearchParams(location.search).get("poll") === "1" || !window.EventSource;
    const status = $("status");
    if (poll) {
      const tick = () => api(netPath("/snapshot")).then((d) => { live(true); onSnapshot(d); })
        .catch((e) => { live(false); S.problem = true; banner(e.message); });
      tick();
      S.pollTimer = setInterval(tick, Math.max(500, (S.config.interval || 1) * 1000));
      return;
    }
    const es = new EventSource(netPath("/events"));
    S.es = es;
    es.addEventListener("snapshot", (ev) => { live(true); onSnapshot(JSON.parse(ev.data)); });
    es.addEventListener("problem", (ev) => { S.problem = true; banner(JSON.parse(ev.data).error); });
    es.onerror = () => { live(false); status.textContent = "reconnecting…"; };
  }

  function live(ok) {
    const s = $("status");
    s.className = "status " + (ok ? "live" : "down");
    s.textContent = ok ? "live" : "disconnected";
  }

  function onSnapshot(d) {
    if (d.network !== S.network) return;
    S.snapshot = d;
    if (S.problem) { S.problem = false; banner(""); }
    const t = d.tasks;
    for (const s of S.config.states.task) $("count-" + s).textContent = t[s];
    const rate = d.throughput && d.throughput.recent;
    $("throughput").textContent = rate === null || rate === undefined ? "–" : rate.toFixed(rate >= 10 ? 0 : 2);
    $("throughput-unit").textContent = d.throughput && d.throughput.recent !== null ? `tasks/s · last ${Math.round(d.throughput.window)} s` : "tasks/s";
    const opt = [...$("network-select").options].find((o) => o.value === d.network);
    if (opt) {
      opt.textContent = `${d.network} (${d.worker_counts.running} running, ${t.finished}/${taskTotal(t)} done)`;
    }
    renderWorkers(d.workers, d.worker_counts);
    if (t.finished !== S.lastFinished) {
      S.lastFinished = t.finished;
      scheduleRefresh();
    }
    if (d.log_last_id && d.log_last_id !== S.lastLogId) loadLogs(false).catch((e) => banner(e.message));
  }

  function scheduleRefresh() {
    // finished tasks changed: redraw plot, timeline and results at most every 2 s
    const wait = Math.max(0, 2000 - (Date.now() - S.lastRefresh));
    if (S.refreshTimer) return;
    S.refreshTimer = setTimeout(() => { S.refreshTimer = null; refreshAll(false); }, wait);
  }

  function refreshAll(first) {
    S.lastRefresh = Date.now();
    loadBest().catch((e) => banner(e.message));
    loadTimeline().catch((e) => banner(e.message));
    loadPareto().catch((e) => banner(e.message));
    loadFidelity().catch((e) => banner(e.message));
    loadResults().catch((e) => banner(e.message));
    if (first) loadLogs(true).catch((e) => banner(e.message));
  }

  // ------------------------------------------------------------------ workers
  function renderWorkers(rows, counts) {
    const body = $("workers-body");
    body.textContent = "";
    const control = !!(S.config && S.config.allow_control);
    let running = 0;
    for (const w of rows) {
      if (w.state === "running") running++;
      const tr = el("tr", { "data-worker-id": w.worker_id, "data-state": w.state });
      tr.appendChild(el("td", { class: "wid" }, w.worker_id));
      const st = el("td", { class: "state-cell" });
      st.appendChild(el("span", { class: "state " + w.state }, w.state));
      tr.appendChild(st);
      // the node it runs on (SLURMD_NODENAME, else its host name); the host name on hover
      tr.appendChild(el("td", { title: w.hostname || "" }, w.node || w.hostname || "–"));
      tr.appendChild(el("td", { class: "num" }, w.pid === null || w.pid === undefined ? "–" : String(w.pid)));
      tr.appendChild(el("td", {}, w.job_id || "–"));
      let hb = fmtAge(w.heartbeat_age);
      if (hb === null) hb = w.heartbeat && w.state === "running" ? "expired" : "–";
      tr.appendChild(el("td", { class: "num heartbeat" }, hb));
      tr.appendChild(el("td", { class: "reason", title: w.reason || "" }, w.reason || ""));
      const act = el("td", { class: "actions" });
      if (isAlive(w.state)) {
        const why = control ? null : "start the dashboard with --allow-control to stop workers";
        const term = el("button", { class: "btn-terminate control", "data-type": "terminate", "data-worker": w.worker_id, title: why || "finish the current task, then end", disabled: !control || w.state !== "running" }, "terminate");
        const kill = el("button", { class: "btn-kill control danger", "data-type": "kill", "data-worker": w.worker_id, title: why || "stop now; its running task fails", disabled: !control }, "kill");
        act.appendChild(term); act.appendChild(kill);
      }
      tr.appendChild(act);
      body.appendChild(tr);
    }
    if (!rows.length) {
      const tr = el("tr"); tr.appendChild(el("td", { colspan: "8", class: "muted" }, "no workers")); body.appendChild(tr);
    }
    $("workers-running").textContent = `${running}/${rows.length}`;
    const c = counts && typeof counts === "object" ? counts : {};
    $("worker-states").textContent = Object.entries(c).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(" · ");
    for (const id of ["terminate-all", "kill-all"]) {
      const b = $(id);
      b.disabled = !control || running === 0;
      b.title = control ? "" : "start the dashboard with --allow-control to stop workers";
    }
  }

  function askStop(type, worker) {
    const all = worker === null;
    S.pendingStop = { type: type, workers: all ? "all" : [worker] };
    const verb = type === "kill" ? "Kill" : "Terminate";
    $("confirm-title").textContent = `${verb} ${all ? "all workers" : "worker " + worker}?`;
    $("confirm-text").textContent = type === "kill"
      ? "The worker stops now; the task it is running fails with \"worker was killed\"."
      : "The worker finishes the task it is running, then ends.";
    $("confirm-ok").textContent = verb;
    $("confirm").showModal();
  }

  async function doStop() {
    const req = S.pendingStop;
    S.pendingStop = null;
    if (!req) return;
    try {
      const doc = await api(netPath("/stop"), {
        method: "POST",
        headers: { "content-type": "application/json", "x-rushhpc-csrf": S.config.csrf, accept: "application/json" },
        body: JSON.stringify(req),
      });
      banner("");
      $("status").title = `${doc.type}: ${doc.workers.join(", ") || "no worker"}`;
    } catch (e) {
      banner("stop refused: " + e.message);
    }
  }

  // ------------------------------------------------------------------ best so far (uPlot)
  async function loadBest() {
    const q = new URLSearchParams();
    if (S.objective) q.set("column", S.objective);
    if (S.direction) q.set("direction", S.direction);
    const d = await api(netPath("/best?" + q));
    if (d.network !== S.network) return;
    const sel = $("objective-select");
    sel.textContent = "";
    for (const c of d.columns) sel.appendChild(el("option", { value: c }, c + (d.outputs.includes(c) ? "" : " (param)")));
    if (d.column) sel.value = d.column; else if (d.metrics && d.metrics.length > 1) { sel.insertBefore(el("option", { value: "" }, "(several metrics)"), sel.firstChild); sel.value = ""; }
    $("direction-select").value = d.direction;
    sel.title = d.source === "sweep" ? "from the sweep's settings" : d.source === "user" ? "your choice" : "default";
    const sum = $("best-summary");
    if (d.metrics && d.metrics.length > 1 && !d.column) {
      // several metrics have no single best: the Pareto front panel shows the trade-off
      if (S.plot) { S.plot.destroy(); S.plot = null; }
      S.plotKey = "";
      const box = $("best-chart");
      box.textContent = "";
      const msg = `this sweep has several metrics (${d.metrics.join(", ")}): no single best, see the Pareto front panel (or choose one objective above)`;
      box.appendChild(el("p", { class: "muted several-metrics" }, msg));
      sum.textContent = `${d.n_finished} finished tasks`;
      return;
    }
    drawBest(d);
    if (d.best.length) {
      const b = d.best[d.best.length - 1];
      const row = d.best_row || {};
      const params = Object.entries(row).filter(([k]) => !["keys", "worker_id", "state", "created_at", "started_at", "finished_at", d.column].includes(k) && !d.outputs.includes(k));
      sum.textContent = `best ${d.column} = ${fmtNum(b)} (${d.direction}, ${d.source}) at ` + params.map(([k, v]) => `${k}=${fmtNum(v)}`).join(", ") + ` · ${d.n_points} of ${d.n_finished} finished tasks` + (d.n_points > d.x.length ? ` (${d.x.length} plotted)` : "");
    } else {
      sum.textContent = d.column ? `no finished task with a number in ${d.column} yet` : "no numeric output in the finished tasks yet";
    }
  }

  function drawBest(d) {
    const box = $("best-chart");
    const width = Math.max(300, box.clientWidth || 600);
    const key = `${d.column}|${d.direction}|${width}`;
    const data = [d.x, d.y, d.best];
    if (!d.x.length) {
      if (S.plot) { S.plot.destroy(); S.plot = null; }
      S.plotKey = "";
      box.textContent = "";
      box.appendChild(el("p", { class: "muted" }, d.column ? `no finished task with a number in ${d.column} yet` : "no finished task yet"));
      return;
    }
    if (S.plot && S.plotKey === key) { S.plot.setData(data); return; }
    if (S.plot) { S.plot.destroy(); S.plot = null; }
    box.textContent = "";
    if (typeof uPlot === "undefined") { box.textContent = "the plotting library did not load"; return; }
    S.plotKey = key;
    S.plot = new uPlot({
      width: width, height: 260,
      scales: { x: { time: false } },
      legend: { live: true },
      axes: [{ label: "task (finish order)" }, { label: d.column || "" }],
      series: [
        { label: "task" },
        { label: d.column || "value", stroke: "#60a5fa", paths: () => null, points: { show: true, size: 5, stroke: "#2563eb", fill: "#93c5fd" } },
        { label: "best so far", stroke: "#dc2626", width: 2, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } },
      ],
    }, data, box);
  }

  // ------------------------------------------------------------------ worker timeline (SVG)
  async function loadTimeline() {
    const d = await api(netPath("/timeline"));
    if (d.network !== S.network) return;
    const box = $("timeline");
    box.textContent = "";
    const workers = d.workers.filter((w) => w.started_at).sort((a, b) => a.started_at - b.started_at).slice(-40);
    if (!workers.length) { box.appendChild(el("p", { class: "muted" }, "no worker has started yet")); return; }
    const now = d.now;
    const t0 = Math.min(...workers.map((w) => w.started_at));
    const span = Math.max(1, now - t0);
    const W = Math.max(300, box.clientWidth || 600), left = 110, right = 10, lane = 18, top = 4;
    const H = top + workers.length * lane + 24;
    const x = (t) => left + ((t - t0) / span) * (W - left - right);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "worker timeline" });
    const lanes = new Map();
    workers.forEach((w, i) => {
      const y = top + i * lane;
      lanes.set(w.worker_id, y);
      const label = svg("text", { x: 4, y: y + 12, "font-size": 11, fill: "#374151" }, w.worker_id.length > 16 ? w.worker_id.slice(0, 15) + "…" : w.worker_id);
      label.appendChild(svg("title", {}, `${w.worker_id} on ${w.hostname || "?"}: ${w.state}`));
      root.appendChild(label);
      const end = w.stopped_at || now;
      const bar = svg("rect", { x: x(w.started_at), y: y + 3, width: Math.max(1, x(end) - x(w.started_at)), height: lane - 6, rx: 2, fill: STATE_COLORS[w.state] || "#94a3b8", "fill-opacity": 0.25, class: "lane", "data-worker-id": w.worker_id });
      bar.appendChild(svg("title", {}, `${w.worker_id}: ${w.state}, ${fmtTime(w.started_at)} – ${w.stopped_at ? fmtTime(w.stopped_at) : "now"}`));
      root.appendChild(bar);
    });
    for (const [wid, s, e, st] of d.tasks) {
      const y = lanes.get(wid);
      if (y === undefined || s < t0) continue;
      const end = e || now;
      root.appendChild(svg("rect", { x: x(s), y: y + 5, width: Math.max(1, x(end) - x(s)), height: lane - 10, fill: st === "running" ? "#f59e0b" : "#2563eb", class: "task" }));
    }
    const axisY = top + workers.length * lane + 4;
    root.appendChild(svg("line", { x1: left, x2: W - right, y1: axisY, y2: axisY, stroke: "#cbd5e1" }));
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (span * i) / 4;
      root.appendChild(svg("text", { x: x(t), y: axisY + 14, "font-size": 10, fill: "#6b7280", "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, fmtTime(t)));
    }
    box.appendChild(root);
    const legend = $("timeline-legend");
    legend.textContent = "";
    for (const [name, color] of [["task", "#2563eb"], ["running task", "#f59e0b"], ["worker alive", "#86efac"]]) {
      const s = el("span"); const i = el("i"); i.style.background = color; s.appendChild(i); s.appendChild(document.createTextNode(name)); legend.appendChild(s);
    }
  }

  // ------------------------------------------------------------------ Pareto front (SVG; sweeps with several metrics)
  async function loadPareto() {
    const d = await api(netPath("/pareto"));
    if (d.network !== S.network) return;
    const panel = $("pareto-panel");
    panel.hidden = !d.multi;
    if (!d.multi) return;
    const box = $("pareto-chart");
    box.textContent = "";
    const all = d.front.concat(d.feasible, d.infeasible);
    const [m0, m1] = d.metrics;
    $("pareto-summary").textContent = `${d.n_front} on the front of ${d.metrics.join(", ")} (${d.directions.join(", ")})` +
      ` · hypervolume ${fmtNum(d.hypervolume)} (reference point ${d.reference_point ? d.reference_point.map(fmtNum).join(", ") : "–"}, ${d.reference_point_source})` +
      ` · ${d.infeasible.length} infeasible · ${d.n_finished} finished tasks` + (d.metrics.length > 2 ? ` · first two of ${d.metrics.length} metrics shown` : "");
    if (!all.length) { box.appendChild(el("p", { class: "muted" }, "no finished task with every metric yet")); return; }
    const xs = all.map((v) => v[0]), ys = all.map((v) => v[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const W = Math.max(300, box.clientWidth || 600), H = 260, left = 56, right = 26, top = 8, bottom = 34;
    const X = (v) => left + ((v - x0) / (x1 - x0)) * (W - left - right);
    const Y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (H - top - bottom);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "Pareto front" });
    root.appendChild(svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, stroke: "#cbd5e1" }));
    root.appendChild(svg("line", { x1: left, x2: left, y1: top, y2: H - bottom, stroke: "#cbd5e1" }));
    for (let i = 0; i <= 4; i++) {
      const vx = x0 + ((x1 - x0) * i) / 4, vy = y0 + ((y1 - y0) * i) / 4;
      root.appendChild(svg("text", { x: X(vx), y: H - bottom + 13, "font-size": 10, fill: "#6b7280", "text-anchor": "middle" }, fmtNum(vx)));
      root.appendChild(svg("text", { x: left - 4, y: Y(vy) + 3, "font-size": 10, fill: "#6b7280", "text-anchor": "end" }, fmtNum(vy)));
    }
    root.appendChild(svg("text", { x: (left + W - right) / 2, y: H - 4, "font-size": 11, fill: "#374151", "text-anchor": "middle" }, `${m0} (${d.directions[0]})`));
    root.appendChild(svg("text", { x: 10, y: top + (H - top - bottom) / 2, "font-size": 11, fill: "#374151", "text-anchor": "middle", transform: `rotate(-90 10 ${top + (H - top - bottom) / 2})` }, `${m1} (${d.directions[1]})`));
    const tip = (v) => svg("title", {}, `${m0}=${fmtNum(v[0])}, ${m1}=${fmtNum(v[1])}`);
    for (const v of d.feasible) { const c = svg("circle", { cx: X(v[0]), cy: Y(v[1]), r: 3, fill: "#94a3b8", class: "feasible" }); c.appendChild(tip(v)); root.appendChild(c); }
    for (const v of d.infeasible) {
      const g = svg("path", { d: `M${X(v[0]) - 3},${Y(v[1]) - 3}l6,6m0,-6l-6,6`, stroke: "#dc2626", "stroke-width": 1.5, class: "infeasible" });
      g.appendChild(tip(v)); root.appendChild(g);
    }
    if (d.front.length > 1 && d.metrics.length === 2) {
      const pts = d.front.map((v) => [X(v[0]), Y(v[1])]);
      let path = `M${pts[0][0]},${pts[0][1]}`;
      for (let i = 1; i < pts.length; i++) path += d.directions[0] === "minimize" ? `H${pts[i][0]}V${pts[i][1]}` : `V${pts[i][1]}H${pts[i][0]}`;
      root.appendChild(svg("path", { d: path, fill: "none", stroke: "#2563eb", "stroke-opacity": 0.5 }));
    }
    for (const v of d.front) { const c = svg("circle", { cx: X(v[0]), cy: Y(v[1]), r: 4.5, fill: "#2563eb", class: "front" }); c.appendChild(tip(v)); root.appendChild(c); }
    box.appendChild(root);
    const legend = $("pareto-legend");
    legend.textContent = "";
    for (const [name, color] of [["front", "#2563eb"], ["feasible", "#94a3b8"], ["infeasible", "#dc2626"]]) {
      const s = el("span"); const i = el("i"); i.style.background = color; s.appendChild(i); s.appendChild(document.createTextNode(name)); legend.appendChild(s);
    }
  }

  // ------------------------------------------------------------------ curves over fidelity (SVG; asha, hyperband)
  // colour of the highest rung reached: viridis as in `rushhpc plot`, reversed so that the top rung is darkest on white
  const VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
  function rungColor(r, top) {
    const t = top > 0 ? r / top : 1;
    const i = Math.min(VIRIDIS.length - 1, Math.round((1 - t) * (VIRIDIS.length - 1)));
    return VIRIDIS[i];
  }

  async function loadFidelity() {
    const d = await api(netPath("/fidelity"));
    if (d.network !== S.network) return;
    const panel = $("fidelity-panel");
    panel.hidden = !d.fidelity;
    if (!d.fidelity) return;
    const box = $("fidelity-chart");
    box.textContent = "";
    const top = d.rungs.length ? d.rungs[d.rungs.length - 1].rung : 0;
    $("fidelity-summary").textContent = `${d.n_configs} configurations, ${d.n_evaluations} evaluations of ${d.metric} (${d.direction})` +
      (d.hyperband ? " · hyperband" : "") + " · per rung (fidelity): " +
      d.rungs.map((r) => `rung ${r.rung} (${fmtNum(r.fidelity)}): ${r.configs} evaluated, ${r.reached} stopped there`).join(" · ");
    const legend = $("fidelity-legend");
    legend.textContent = "";
    for (const r of d.rungs) {
      const s = el("span", { class: "rung-count", "data-rung": r.rung, "data-configs": r.configs, "data-reached": r.reached });
      const i = el("i"); i.style.background = rungColor(r.rung, top); s.appendChild(i);
      s.appendChild(document.createTextNode(`rung ${r.rung}: ${r.configs}`));
      s.title = `${r.configs} configurations evaluated at fidelity ${fmtNum(r.fidelity)}; ${r.reached} reached no higher rung`;
      legend.appendChild(s);
    }
    if (!d.curves.length) { box.appendChild(el("p", { class: "muted" }, `no finished evaluation with ${d.metric} yet`)); return; }
    const pts = d.curves.flatMap((c) => c.points);
    const fx = pts.map((p) => p[0]), fy = pts.map((p) => p[1]);
    const logX = Math.min(...fx) > 0 && Math.max(...fx) / Math.min(...fx) > 10;
    const tx = (v) => (logX ? Math.log10(v) : v);
    let x0 = tx(Math.min(...fx)), x1 = tx(Math.max(...fx)), y0 = Math.min(...fy), y1 = Math.max(...fy);
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const W = Math.max(300, box.clientWidth || 600), H = 260, left = 56, right = 14, top_ = 8, bottom = 34;
    const X = (v) => left + ((tx(v) - x0) / (x1 - x0)) * (W - left - right);
    const Y = (v) => top_ + (1 - (v - y0) / (y1 - y0)) * (H - top_ - bottom);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "curves over fidelity" });
    root.appendChild(svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, stroke: "#cbd5e1" }));
    root.appendChild(svg("line", { x1: left, x2: left, y1: top_, y2: H - bottom, stroke: "#cbd5e1" }));
    for (const r of d.rungs) {  // one tick per rung's fidelity
      root.appendChild(svg("text", { x: X(r.fidelity), y: H - bottom + 13, "font-size": 10, fill: "#6b7280", "text-anchor": "middle" }, fmtNum(r.fidelity)));
    }
    for (let i = 0; i <= 4; i++) {
      const vy = y0 + ((y1 - y0) * i) / 4;
      root.appendChild(svg("text", { x: left - 4, y: Y(vy) + 3, "font-size": 10, fill: "#6b7280", "text-anchor": "end" }, fmtNum(vy)));
    }
    root.appendChild(svg("text", { x: (left + W - right) / 2, y: H - 4, "font-size": 11, fill: "#374151", "text-anchor": "middle" }, "fidelity" + (logX ? " (log scale)" : "")));
    root.appendChild(svg("text", { x: 10, y: top_ + (H - top_ - bottom) / 2, "font-size": 11, fill: "#374151", "text-anchor": "middle", transform: `rotate(-90 10 ${top_ + (H - top_ - bottom) / 2})` }, `${d.metric} (${d.direction})`));
    for (const c of d.curves) {  // lowest rungs first: the curves that went furthest are drawn on top
      const color = rungColor(c.rung, top);
      const g = svg("g", { class: "curve", "data-config": c.config, "data-rung": c.rung });
      g.appendChild(svg("title", {}, `${c.config}: highest rung ${c.rung}` + (c.bracket !== null && c.bracket !== undefined ? `, bracket ${c.bracket}` : "") +
        " · " + c.points.map((p) => `${fmtNum(p[0])}: ${fmtNum(p[1])}`).join(", ")));
      if (c.points.length > 1) {
        g.appendChild(svg("polyline", { points: c.points.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "), fill: "none", stroke: color, "stroke-width": 1.2, "stroke-opacity": 0.85 }));
      }
      for (const p of c.points) g.appendChild(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color }));
      root.appendChild(g);
    }
    box.appendChild(root);
  }

  // ------------------------------------------------------------------ results table
  function resultsQuery(extra) {
    const r = S.results;
    const q = new URLSearchParams({ state: r.state, order: r.order });
    if (r.sort) q.set("sort", r.sort);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q.toString();
  }

  async function loadResults() {
    const r = S.results;
    const d = await api(netPath("/tasks?" + resultsQuery({ limit: r.limit, offset: r.offset })));
    if (d.network !== S.network || d.state !== r.state) return;
    const table = $("results-table");
    const head = table.tHead.rows[0];
    head.textContent = "";
    const hidden = new Set(["keys", "created_at", "state"]);
    const cols = d.columns.filter((c) => !hidden.has(c));
    for (const c of cols) {
      const th = el("th", { "data-col": c, class: c === r.sort ? "sorted-" + r.order : "", title: "sort by " + c }, c);
      th.addEventListener("click", () => {
        if (r.sort === c) r.order = r.order === "asc" ? "desc" : "asc"; else { r.sort = c; r.order = "asc"; }
        r.offset = 0;
        loadResults().catch((e) => banner(e.message));
      });
      head.appendChild(th);
    }
    const body = table.tBodies[0];
    body.textContent = "";
    for (const row of d.rows) {
      const tr = el("tr", { "data-key": row.keys });
      for (const c of cols) {
        const v = row[c];
        const text = c.endsWith("_at") && typeof v === "number" ? fmtTime(v) : fmtNum(v);
        tr.appendChild(el("td", { class: typeof v === "number" && !c.endsWith("_at") ? "num" : "", title: c === "condition" ? v : null }, text));
      }
      body.appendChild(tr);
    }
    const lo = d.total ? d.offset + 1 : 0, hi = d.offset + d.rows.length;
    $("results-info").textContent = `${lo}–${hi} of ${d.total}` + (r.sort ? "" : r.order === "desc" ? ", newest first" : ", oldest first");
    $("results-prev").disabled = d.offset === 0;
    $("results-next").disabled = hi >= d.total;
    $("csv-link").href = netPath("/results.csv?" + resultsQuery());
    $("csv-link").setAttribute("download", `${S.network}-${r.state}.csv`);
  }

  // ------------------------------------------------------------------ logs
  // one log read at a time, in order: a reset and an incremental read never both append
  let logChain = Promise.resolve();
  function loadLogs(reset) {
    const run = logChain.then(() => readLogs(reset));
    logChain = run.catch(() => {});
    return run;
  }

  async function readLogs(reset) {
    if (!reset && S.snapshot && S.snapshot.log_last_id === S.lastLogId) return;
    if (reset) { S.lastLogId = null; $("logs-body").textContent = ""; }
    const q = new URLSearchParams({ limit: reset ? 500 : 1000 });
    if (S.logLevel) q.set("level", S.logLevel);
    if (S.lastLogId) q.set("after", S.lastLogId);
    const net = S.network;
    const d = await api(netPath("/logs?" + q));
    if (net !== S.network) return;
    S.lastLogId = d.last_id || S.lastLogId;
    const box = $("logs-box");
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    const body = $("logs-body");
    for (const row of d.rows) {
      const tr = el("tr", { class: "log lv-" + row.level, "data-level": row.level });
      tr.appendChild(el("td", {}, fmtTime(row.timestamp)));
      tr.appendChild(el("td", {}, row.worker_id || ""));
      tr.appendChild(el("td", { class: "level" }, row.level || ""));
      tr.appendChild(el("td", {}, row.logger || ""));
      tr.appendChild(el("td", { class: "msg" }, row.msg || ""));
      body.appendChild(tr);
    }
    while (body.rows.length > LIMIT_LOG_ROWS) body.deleteRow(0);
    $("logs-info").textContent = `${body.rows.length} record(s) shown` + (S.logLevel ? ` at ${S.logLevel} or above` : "");
    if (atBottom || reset) box.scrollTop = box.scrollHeight;
  }

  // ------------------------------------------------------------------ controls
  let bound = false;
  function bindControls() {
    if (bound) return;
    bound = true;
    $("network-select").addEventListener("change", (e) => { if (e.target.value) selectNetwork(e.target.value); });
    $("objective-select").addEventListener("change", (e) => { S.objective = e.target.value; loadBest().catch((x) => banner(x.message)); });
    $("direction-select").addEventListener("change", (e) => { S.direction = e.target.value; loadBest().catch((x) => banner(x.message)); });
    $("log-level").addEventListener("change", (e) => { S.logLevel = e.target.value; loadLogs(true).catch((x) => banner(x.message)); });
    $("results-state").addEventListener("change", (e) => { S.results = { state: e.target.value, sort: "", order: "desc", offset: 0, limit: 100 }; loadResults().catch((x) => banner(x.message)); });
    $("results-prev").addEventListener("click", () => { S.results.offset = Math.max(0, S.results.offset - S.results.limit); loadResults().catch((x) => banner(x.message)); });
    $("results-next").addEventListener("click", () => { S.results.offset += S.results.limit; loadResults().catch((x) => banner(x.message)); });
    document.addEventListener("click", (e) => {
      const b = e.target.closest("button.control");
      if (!b || b.disabled) return;
      askStop(b.dataset.type, b.dataset.all ? null : b.dataset.worker);
    });
    $("confirm").addEventListener("close", () => {
      if ($("confirm").returnValue === "ok") doStop(); else S.pendingStop = null;
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => refreshAll(false), 300); });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (e) => login(e).catch((x) => banner(x.message)));
    start().catch((e) => banner(e.message));
  });
})();
