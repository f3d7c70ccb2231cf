// The interactive part of report.html: draws every chart from the data embedded in the page
// (window.KPBENCH, written by kpbench/results/interactive.py) with plotly.js, and redraws
// them when a filter changes. No network access: plotly.js is inlined in the same page.
// Every string of the data is text: where plotly would read it as its HTML-like markup (a
// trace name, a category, a title, a heatmap cell), it goes through esc(); the DOM gets it
// through textContent. Hover texts come escaped from interactive.py.
(function () {
  "use strict";
  let data = null;   // window.KPBENCH, set by a script in the body: read once the page is loaded
  const LOG = { type: "log", exponentformat: "power" };
  const state = {};

  function esc(s) {   // as kpbench.results.escape.plotly_text
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function distinct(values) {
    const seen = [];
    values.forEach(function (v) { if (v !== null && seen.indexOf(v) < 0) seen.push(v); });
    return seen.sort(function (a, b) { return (typeof a === "number") ? a - b : String(a) < String(b) ? -1 : 1; });
  }

  function passes(record) {
    return data.filters.every(function (f) {
      const want = state[f];
      return want === "all" || String(record[f]) === want;
    });
  }

  function buildFilters() {
    const box = document.getElementById("kp-filters");
    data.filters.forEach(function (f) {
      const values = distinct(data.rows.map(function (r) { return r[f]; }));
      const label = document.createElement("label");
      label.textContent = f + " ";
      const select = document.createElement("select");
      select.id = "kp-filter-" + f;
      const options = (f === "op") ? values : ["all"].concat(values);
      options.forEach(function (v) {
        const o = document.createElement("option");
        o.value = String(v); o.textContent = String(v);
        select.appendChild(o);
      });
      state[f] = select.value = String(options[0]);
      select.addEventListener("change", function () { state[f] = select.value; drawAll(); });
      label.appendChild(select);
      box.appendChild(label);
    });
  }

  function color(backend) { return data.colors[backend] || "#777"; }

  function draw(id, traces, layout, emptyText) {
    const div = document.getElementById(id);
    if (!div) return;
    const base = { margin: { t: 40, r: 20 }, hovermode: "closest", legend: { font: { size: 10 } } };
    if (!traces.length) {
      layout = Object.assign({}, layout, { annotations: [{ text: emptyText || "nothing to show for these filters",
        showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
        xaxis: { visible: false }, yaxis: { visible: false } });
    }
    Plotly.react(div, traces, Object.assign(base, layout), { responsive: true, displaylogo: false });
  }

  function groupBy(records, key) {
    const groups = {};
    records.forEach(function (r) { (groups[r[key]] = groups[r[key]] || []).push(r); });
    return groups;
  }

  function lines(records, yField, extra) {
    const groups = groupBy(records, "series");
    return Object.keys(groups).sort().map(function (name) {
      const g = groups[name].slice().sort(function (a, b) { return a.N - b.N; });
      return Object.assign({ type: "scatter", mode: "lines+markers", name: esc(name),
        x: g.map(function (r) { return r.N; }), y: g.map(function (r) { return r[yField]; }),
        text: g.map(function (r) { return r.hover; }), hovertemplate: "%{text}<extra></extra>",
        line: { color: color(g[0].backend) }, marker: { color: color(g[0].backend) } }, extra ? extra(g) : {});
    });
  }

  function selected(records) { return records.filter(passes); }

  // the machine's limit (limit_s, kpbench.bench.costs) of each series, dotted in its colour
  function limitLines(ok) {
    const box = document.getElementById("kp-time-limit");
    if (!box || !box.checked) return [];
    return lines(ok.filter(function (r) { return r.limit_s > 0; }), "limit_s", function (g) {
      return { name: esc(g[0].series) + " (limit)", mode: "lines", hoverinfo: "skip",
        line: { dash: "dot", color: color(g[0].backend) } };
    });
  }

  function drawTime() {
    const ok = selected(data.rows).filter(function (r) { return r.status === "ok" && r.time_median_s > 0; });
    draw("kp-time", lines(ok, "time_median_s", function (g) {
      return { error_y: { type: "data", symmetric: false, thickness: 1, width: 3,
        array: g.map(function (r) { return r.q3 !== null ? r.q3 - r.time_median_s : null; }),
        arrayminus: g.map(function (r) { return r.q1 !== null ? r.time_median_s - r.q1 : null; }) } };
    }).concat(limitLines(ok)), { title: { text: "median time vs N (bars: inter-quartile range)" },
      xaxis: Object.assign({ title: { text: "N" } }, LOG), yaxis: Object.assign({ title: { text: "seconds" } }, LOG) },
    "no timed points for these filters");
  }

  // A row of the map: its configuration without the axes a filter pins (they are the same on
  // every row), so rows differing only in such an axis fold into one.
  function winRow(w) {
    return w.parts.filter(function (p) { return !(p[0] in state) || state[p[0]] === "all"; })
      .map(function (p) { return p[1]; }).join(" ") || "(default)";
  }

  function winText(w) {
    const margin = w.winner + " " + w.margin.toFixed(2) + "x";
    return w.dtypes ? margin + " (" + w.dtypes[0] + " vs " + w.runner_up + " " + w.dtypes[1] + ", across dtypes)" : margin;
  }

  function drawWins() {
    // cells where one backend alone was timed compare nothing: counted in the title, not drawn;
    // with dtype "all", one backend per dtype is compared across dtypes (a record without dtype)
    const chosen = selected(data.wins).filter(function (w) { return !(w.folded && state.dtype === "all"); });
    const singles = chosen.filter(function (w) { return w.single; });
    const wins = chosen.filter(function (w) { return !w.single; });
    const ns = distinct(wins.map(function (w) { return w.N; }));
    const configs = distinct(wins.map(winRow));
    const singleRows = distinct(singles.map(winRow)).filter(function (c) { return configs.indexOf(c) < 0; });
    const index = {}; data.backends.forEach(function (b, i) { index[b] = i; });
    const z = configs.map(function () { return ns.map(function () { return null; }); });
    const text = configs.map(function () { return ns.map(function () { return ""; }); });
    wins.forEach(function (w) {
      const i = configs.indexOf(winRow(w)), j = ns.indexOf(w.N);
      z[i][j] = index[w.winner];
      text[i][j] = esc(winText(w));
    });
    const scale = [];
    const colors = data.backends.map(color);
    colors.forEach(function (c, i) {
      scale.push([i / colors.length, c]); scale.push([(i + 1) / colors.length, c]);
    });
    const note = singles.length ? "<br><sub>" + singleRows.length + " configuration(s) and " + singles.length
      + " cell(s) had a single backend timed: not drawn</sub>" : "";
    const traces = wins.length ? [{ type: "heatmap", x: ns.map(String), y: configs.map(esc), z: z, text: text,
      texttemplate: "%{text}", zmin: -0.5, zmax: colors.length - 0.5, colorscale: scale, showscale: false,
      hovertemplate: "%{y}<br>N=%{x}: %{text}<extra></extra>", xgap: 2, ygap: 2 }] : [];
    draw("kp-wins", traces, { title: { text: "who wins where: fastest backend and its margin over the runner-up" + note },
      xaxis: { title: { text: "N" }, type: "category" }, yaxis: { automargin: true, type: "category" },
      height: Math.max(300, 80 + 40 * configs.length) },
      singles.length ? "one backend per configuration here: nothing compared (" + singles.length + " cell(s))"
        : "no configuration timed on this selection");
  }

  function paretoFront(points) {
    const sorted = points.slice().sort(function (a, b) { return a.time - b.time; });
    const front = []; let best = Infinity;
    sorted.forEach(function (p) { if (p.err_shown < best) { best = p.err_shown; front.push(p); } });
    return front;
  }

  function drawPareto() {
    const both = selected(data.cells).filter(function (c) { return c.time !== null && c.err !== null; });
    const select = document.getElementById("kp-pareto-n");
    const ns = distinct(both.map(function (c) { return c.N; }));
    const keep = select.value;
    select.innerHTML = "";
    ns.forEach(function (n) { const o = document.createElement("option"); o.value = o.textContent = String(n); select.appendChild(o); });
    if (ns.length) select.value = ns.indexOf(Number(keep)) >= 0 ? keep : String(ns[ns.length - 1]);
    const points = both.filter(function (c) { return String(c.N) === select.value; });
    const traces = [];
    const groups = groupBy(points, "backend");
    Object.keys(groups).forEach(function (b) {
      const g = groups[b];
      traces.push({ type: "scatter", mode: "markers", name: esc(b), x: g.map(function (c) { return c.time; }),
        y: g.map(function (c) { return c.err_shown; }), text: g.map(function (c) { return c.hover; }),
        hovertemplate: "%{text}<extra></extra>", marker: { size: 10, color: color(b) } });
    });
    const front = paretoFront(points);
    if (front.length > 1) {
      traces.push({ type: "scatter", mode: "lines", name: "Pareto front", x: front.map(function (c) { return c.time; }),
        y: front.map(function (c) { return c.err_shown; }), line: { dash: "dot", color: "#333" }, hoverinfo: "skip" });
    }
    draw("kp-pareto", traces, { title: { text: "accuracy vs time at N=" + (select.value || "-") + " (lower left is better)" },
      xaxis: Object.assign({ title: { text: "median time [s]" } }, LOG),
      yaxis: Object.assign({ title: { text: "max rel. error vs float64 reference" } }, LOG) },
    "no point with both a time and an error on this selection");
  }

  function drawMemory() {
    const rows = selected(data.rows);
    const ok = rows.filter(function (r) { return r.status === "ok" && r.peak_mem_bytes > 0; });
    const traces = lines(ok, "peak_mem_bytes");
    const top = Math.max.apply(null, ok.map(function (r) { return r.peak_mem_bytes; }).concat([1]));
    const refused = rows.filter(function (r) { return r.status === "skipped" || r.status === "oom"; });
    if (refused.length) {
      traces.push({ type: "scatter", mode: "markers", name: "refused (skipped) / oom",
        x: refused.map(function (r) { return r.N; }),
        y: refused.map(function (r) { return r.mem_estimate_bytes || top; }),
        text: refused.map(function (r) { return r.hover; }), hovertemplate: "%{text}<extra></extra>",
        marker: { symbol: "x", size: 12, color: refused.map(function (r) { return color(r.backend); }) } });
    }
    draw("kp-memory", traces, { title: { text: "peak memory vs N; x: refused by the pre-flight (at its estimate) or out of memory" },
      xaxis: Object.assign({ title: { text: "N" } }, LOG), yaxis: Object.assign({ title: { text: "bytes" } }, LOG) },
    "no memory measured on this selection");
  }

  function drawStatus() {
    const rows = selected(data.rows);
    const backends = distinct(rows.map(function (r) { return r.backend; }));
    const traces = data.statuses.map(function (s) {
      return { type: "bar", name: s, x: backends.map(esc), marker: { color: data.status_colors[s] },
        y: backends.map(function (b) { return rows.filter(function (r) { return r.backend === b && r.status === s; }).length; }) };
    }).filter(function (t) { return t.y.some(function (n) { return n > 0; }); });
    draw("kp-status", traces, { barmode: "stack", title: { text: "statuses (click a bar for its messages)" },
      yaxis: { title: { text: "points" } } });
    const div = document.getElementById("kp-status");
    if (div.removeAllListeners) div.removeAllListeners("plotly_click");
    div.on("plotly_click", function (ev) {
      const p = ev.points[0], backend = backends[p.pointNumber];
      showMessages(rows.filter(function (r) { return r.backend === backend && r.status === p.data.name; }), backend, p.data.name);
    });
  }

  function showMessages(rows, backend, status) {
    const box = document.getElementById("kp-messages");
    box.innerHTML = "";
    const head = document.createElement("p");
    head.textContent = backend + ", " + status + ": " + rows.length + " points";
    box.appendChild(head);
    const list = document.createElement("ul");
    rows.forEach(function (r) {
      const li = document.createElement("li");
      li.textContent = r.label + (r.error ? ": " + r.error : "");
      list.appendChild(li);
    });
    box.appendChild(list);
  }

  function drawRegret() {
    if (!data.regret || !document.getElementById("kp-regret")) return;
    const groups = groupBy(data.regret.filter(function (r) { return r.op === state.op; }), "seen");
    const traces = Object.keys(groups).map(function (seen) {
      const g = groups[seen];
      return { type: "scatter", mode: "markers", name: seen, x: g.map(function (r) { return r.N; }),
        y: g.map(function (r) { return r.regret; }), text: g.map(function (r) { return r.hover; }),
        hovertemplate: "%{text}<extra></extra>", marker: { size: 9 } };
    });
    draw("kp-regret", traces, { title: { text: "regret of backend=\"auto\" (" + esc(state.op) + "): its time over the best backend's" },
      xaxis: Object.assign({ title: { text: "N" } }, LOG), yaxis: { title: { text: "time(auto pick) / time(best)" } },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 1.1, y1: 1.1, line: { dash: "dot", color: "#c00" } }] });
  }

  function drawAll() {
    [drawTime, drawWins, drawPareto, drawMemory, drawStatus, drawRegret].forEach(function (f) { f(); });
    document.body.setAttribute("data-kp-drawn", String(++drawn));
  }
  let drawn = 0;

  document.addEventListener("DOMContentLoaded", function () {
    data = window.KPBENCH;
    if (!data) return;   // a report without sweep rows has no charts
    buildFilters();
    document.getElementById("kp-pareto-n").addEventListener("change", drawPareto);
    document.getElementById("kp-time-limit").addEventListener("change", drawTime);
    drawAll();
  });
})();
