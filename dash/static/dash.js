// plumb dash: the run list, a run's charts and samples, runs overlaid.
// Every string from a run (names, prompts, responses) goes into the page
// as text (textContent), never as markup.
"use strict";
const GROUPS = ["rollout", "eval", "train", "critic", "perf"];
const COLORS = ["#2a7ae2", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad", "#5c940d", "#495057"];
const main = document.getElementById("main");
let live = null; // the EventSource of the run on screen
let timer = null; // the run list's refresh, or a retry of the page

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
// A failed request says whether trying again can help: the server, or
// the Redis behind it, is away (503, or no answer at all).
async function api(path) {
  let r;
  try { r = await fetch(path); } catch (e) {
    const err = new Error("the dashboard server does not answer"); err.retry = true; throw err;
  }
  const j = await r.json();
  if (!r.ok) { const err = new Error(j.error || r.statusText); err.retry = r.status === 503; throw err; }
  return j;
}
function setConn(text) { document.getElementById("conn").textContent = text; }

const opts = { smooth: 0, log: false, x: "step" };
function controls(redraw) {
  const c = el("div", null, "controls");
  const sm = el("input"); sm.type = "range"; sm.min = 0; sm.max = 0.99; sm.step = 0.01; sm.value = opts.smooth;
  sm.oninput = () => { opts.smooth = +sm.value; redraw(); };
  const lg = el("input"); lg.type = "checkbox"; lg.checked = opts.log;
  lg.onchange = () => { opts.log = lg.checked; redraw(); };
  const xs = el("select");
  for (const v of ["step", "wall time"]) { const o = el("option", v); o.value = v; xs.appendChild(o); }
  xs.value = opts.x; xs.onchange = () => { opts.x = xs.value; redraw(); };
  for (const [t, w] of [["smoothing ", sm], ["log scale ", lg], ["x axis ", xs]]) {
    const l = el("label", t); l.appendChild(w); c.appendChild(l);
  }
  return c;
}
function smooth(ys) {
  if (!opts.smooth) return ys;
  let s = null;
  return ys.map(y => (y === null ? y : (s = s === null ? y : opts.smooth * s + (1 - opts.smooth) * y)));
}
// series: [{label, rows}] -> one chart of key
function chart(parent, title, series, key) {
  const box = el("div", null, "chart");
  box.appendChild(el("div", title));
  const canvas = el("canvas");
  box.appendChild(canvas);
  parent.appendChild(box);
  const t0 = series.map(s => (s.rows.length ? s.rows[0]["perf/time"] || 0 : 0));
  const data = {
    datasets: series.map((s, i) => ({
      label: s.label, pointRadius: 1, borderWidth: 1.5, spanGaps: true, fill: false,
      borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
      data: (() => {
        const xs = s.rows.map(r => (opts.x === "step" ? r.step : (r["perf/time"] || 0) - t0[i]));
        const ys = smooth(s.rows.map(r => (typeof r[key] === "number" ? r[key] : null)));
        return xs.map((x, j) => ({ x, y: ys[j] })).filter(p => p.y !== null);
      })(),
    })),
  };
  const c = new Chart(canvas, {
    type: "line", data, options: {
      animation: false, parsing: false,
      scales: { x: { type: "linear", title: { display: true, text: opts.x === "step" ? "step" : "seconds" } },
                y: { type: opts.log ? "logarithmic" : "linear",
                     ticks: { callback: v => String(+Number(v).toPrecision(3)) } } },
    },
  });
  box.dataset.points = data.datasets.map(d => d.data.length).join(",");
  return c;
}

async function showRuns() {
  const runs = await api("/api/runs");
  main.replaceChildren(el("h2", "Runs"));
  const t = el("table"); t.id = "runs";
  main.appendChild(t);
  const fill = list => {
    const checked = new Set([...t.querySelectorAll("input:checked")].map(c => c.value));
    t.replaceChildren();
    const h = el("tr");
    for (const c of ["", "run", "algorithm", "state", "step", "host"]) h.appendChild(el("th", c));
    t.appendChild(h);
    for (const r of list) {
      const tr = el("tr"); tr.dataset.run = r.name;
      const cb = el("input"); cb.type = "checkbox"; cb.value = r.name; cb.checked = checked.has(r.name);
      const td0 = el("td"); td0.appendChild(cb); tr.appendChild(td0);
      const a = el("a", r.name); a.href = "#/run/" + encodeURIComponent(r.name);
      const td1 = el("td"); td1.appendChild(a); tr.appendChild(td1);
      tr.appendChild(el("td", r.algo));
      const st = el("td", r.state, "state state-" + r.state); st.dataset.state = r.state;
      if (r.error) st.title = r.error;
      tr.appendChild(st);
      tr.appendChild(el("td", r.steps ? r.step + " / " + r.steps : r.step));
      tr.appendChild(el("td", r.host));
      t.appendChild(tr);
    }
  };
  fill(runs);
  const b = el("button", "overlay the checked runs"); b.id = "overlay";
  b.onclick = () => {
    const names = [...t.querySelectorAll("input:checked")].map(c => c.value);
    if (names.length) location.hash = "#/compare/" + names.map(encodeURIComponent).join(",");
  };
  main.appendChild(b);
  // new runs, steps and states, every 2 s
  timer = setInterval(async () => {
    try { fill(await api("/api/runs")); setConn(""); }
    catch (err) { if (err.retry) setConn("reconnecting… (" + err.message + ")"); }
  }, 2000);
}

function drawGroups(parent, series, keys) {
  parent.replaceChildren();
  for (const g of GROUPS) {
    const ks = keys.filter(k => k.startsWith(g + "/") && k !== "perf/time");
    if (!ks.length) continue;
    parent.appendChild(el("h3", g));
    const grid = el("div", null, "charts");
    parent.appendChild(grid);
    for (const k of ks) chart(grid, k, series, k).canvas.parentNode.dataset.key = k;
  }
}

async function showRun(name) {
  const run = await api("/api/runs/" + encodeURIComponent(name));
  const m = await api("/api/runs/" + encodeURIComponent(name) + "/metrics");
  const rows = m.rows;
  main.replaceChildren(el("h2", run.name));
  const state = el("p", null); state.id = "state";
  const setState = s => { state.textContent = run.algo + " · " + s; state.className = "state-" + s; state.dataset.state = s; };
  setState(run.state);
  main.appendChild(state);
  const charts = el("div");
  const redraw = () => drawGroups(charts, [{ label: name, rows }], run.keys);
  main.appendChild(controls(redraw));
  main.appendChild(charts);
  redraw();
  main.appendChild(el("h3", "samples"));
  const pick = el("select"); pick.id = "sample-step";
  const table = el("table"); table.id = "samples";
  main.appendChild(pick); main.appendChild(table);
  const samples = await api("/api/runs/" + encodeURIComponent(name) + "/samples");
  const steps = [...new Set(samples.map(s => s.step))];
  for (const s of steps) { const o = el("option", "step " + s); o.value = s; pick.appendChild(o); }
  const fill = () => {
    table.replaceChildren();
    const h = el("tr");
    for (const c of ["prompt", "response", "reward", "answer"]) h.appendChild(el("th", c));
    table.appendChild(h);
    for (const s of samples.filter(s => String(s.step) === pick.value)) {
      const tr = el("tr");
      for (const v of [s.prompt, s.response, s.reward, s.answer]) {
        const td = el("td"); td.appendChild(el("pre", v === undefined ? "" : v, "text")); tr.appendChild(td);
      }
      table.appendChild(tr);
    }
  };
  pick.onchange = fill;
  if (steps.length) { pick.value = steps[steps.length - 1]; fill(); }
  const ex = el("p");
  for (const f of ["csv", "jsonl"]) {
    const a = el("a", "download " + f); a.href = "/api/runs/" + encodeURIComponent(name) + "/export?format=" + f;
    ex.appendChild(a); ex.appendChild(document.createTextNode(" "));
  }
  main.appendChild(ex);
  // live: new lines and state changes
  const last = rows.length ? rows[rows.length - 1].step : -1;
  live = new EventSource("/api/runs/" + encodeURIComponent(name) + "/events?after=" + last);
  live.addEventListener("metrics", e => { rows.push(JSON.parse(e.data)); redraw(); });
  live.addEventListener("state", e => setState(JSON.parse(e.data).state));
  live.addEventListener("source", e => {
    const s = JSON.parse(e.data);
    setConn(s.state === "ok" ? "" : "reconnecting… (" + s.error + ")");
  });
  live.onopen = () => setConn("");
  live.onerror = () => setConn("reconnecting… (the dashboard server does not answer)");
}

async function showCompare(names) {
  const series = [];
  let keys = [];
  for (const n of names) {
    const run = await api("/api/runs/" + encodeURIComponent(n));
    const m = await api("/api/runs/" + encodeURIComponent(n) + "/metrics");
    series.push({ label: n, rows: m.rows });
    for (const k of run.keys) if (!keys.includes(k)) keys.push(k);
  }
  main.replaceChildren(el("h2", names.join(" · ")));
  const charts = el("div");
  const redraw = () => drawGroups(charts, series, keys);
  main.appendChild(controls(redraw));
  main.appendChild(charts);
  redraw();
}

async function route() {
  if (live) { live.close(); live = null; }
  if (timer) { clearInterval(timer); clearTimeout(timer); timer = null; }
  const h = decodeURIComponent(location.hash.slice(1));
  try {
    if (h.startsWith("/run/")) await showRun(h.slice(5));
    else if (h.startsWith("/compare/")) await showCompare(h.slice(9).split(","));
    else await showRuns();
    setConn("");
  } catch (err) {
    if (err.retry) { // the source is away: say so, and try again
      setConn("reconnecting… (" + err.message + ")");
      timer = setTimeout(route, 2000);
    } else main.replaceChildren(el("p", "error: " + err.message, "state-failed"));
  }
}
window.addEventListener("hashchange", route);
route();
