/* The report's explorer: reads the JSON payload peft_arena/report/views/explorer.py embeds, and
   draws with the Plotly bundle inlined before this script. Nothing here fetches anything. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const columns = new Map(data.columns.map((c) => [c.key, c]));
  const cells = data.cells;
  const SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "x", "star",
                   "hexagon", "pentagon", "triangle-down"];
  const MIB = 1024 * 1024;
  const state = { filters: {}, x: null, y: null, betterX: "max", betterY: "max",
                  logX: false, logY: false, selected: [] };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }
  function filterValue(row, name) {
    const value = row[name];
    return value === null || value === undefined ? "(none)" : String(value);
  }
  function fmt(value) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    const abs = Math.abs(value);
    if (abs >= 1e5) {
      return value.toLocaleString("en", { notation: "compact", maximumSignificantDigits: 4 });
    }
    if (abs !== 0 && abs < 1e-3) return value.toExponential(3);
    if (Number.isInteger(value)) return value.toLocaleString("en");
    return value.toLocaleString("en", { maximumSignificantDigits: 4 });
  }
  // Scores in [0, 1] read best with three decimals, shares as percentages.
  const SCORES = new Set(["accuracy", "macro_f1", "val_accuracy", "val_macro_f1"]);
  const SHARES = new Set(["mfu"]);
  function fmtColumn(key, value) {
    if (!finite(value)) return "—";
    if (SCORES.has(key)) return value.toFixed(3);
    if (SHARES.has(key)) return (100 * value).toFixed(1) + "%";
    return fmt(value);
  }
  function label(key) { return columns.get(key) ? columns.get(key).label : key; }
  function finite(value) { return typeof value === "number" && isFinite(value); }

  // ------------------------------------------------------------------ filters

  function buildFilters() {
    const box = document.getElementById("explorer-filters");
    for (const name of data.filters) {
      const values = [...new Set(data.rows.map((r) => filterValue(r, name)))].sort(
        (a, b) => a.localeCompare(b, "en", { numeric: true }));
      state.filters[name] = new Set(values);
      const set = el("fieldset", { "data-filter": name }, el("legend", { text: name + " " }));
      const toggle = el("button", { type: "button", class: "filter-all", text: "all / none" });
      set.querySelector("legend").append(toggle);
      for (const value of values) {
        const input = el("input", { type: "checkbox", value, "data-filter": name });
        input.checked = true;
        input.addEventListener("change", () => {
          if (input.checked) state.filters[name].add(value); else state.filters[name].delete(value);
          draw();
        });
        set.append(el("label", { title: value }, input, " " + value));
      }
      toggle.addEventListener("click", () => {
        const boxes = set.querySelectorAll("input");
        const on = state.filters[name].size < values.length;
        boxes.forEach((b) => { b.checked = on; });
        state.filters[name] = new Set(on ? values : []);
        draw();
      });
      box.append(set);
    }
  }

  function visibleRows() {
    return data.rows.filter((row) => data.filters.every(
      (name) => state.filters[name].has(filterValue(row, name))));
  }

  // ------------------------------------------------------------------ axes

  function buildAxes() {
    for (const axis of ["x", "y"]) {
      const select = document.getElementById("axis-" + axis);
      for (const column of data.columns) {
        select.append(el("option", { value: column.key, text: column.label }));
      }
      select.addEventListener("change", () => setAxis(axis, select.value));
      document.getElementById("better-" + axis).addEventListener("change", (event) => {
        state[axis === "x" ? "betterX" : "betterY"] = event.target.value; draw();
      });
      document.getElementById("log-" + axis).addEventListener("change", (event) => {
        state[axis === "x" ? "logX" : "logY"] = event.target.checked; draw();
      });
    }
    const [x, y] = data.default_axes;
    setAxis("x", x || data.columns[0].key, true);
    setAxis("y", y || x || data.columns[0].key, true);
  }

  function setAxis(axis, key, quiet) {
    const column = columns.get(key);
    state[axis] = key;
    document.getElementById("axis-" + axis).value = key;
    // A column with no better direction (a setting, an update's shape) defaults to higher.
    const better = column && column.better ? column.better : "max";
    state[axis === "x" ? "betterX" : "betterY"] = better;
    document.getElementById("better-" + axis).value = better;
    // A log axis where the values span more than two decades (parameter counts do).
    const values = data.rows.map((r) => r.values[key]).filter((v) => finite(v) && v > 0);
    const allPositive = values.length === data.rows.filter((r) => finite(r.values[key])).length;
    const log = allPositive && values.length > 1 &&
      Math.max(...values) / Math.min(...values) > 100;
    state[axis === "x" ? "logX" : "logY"] = log;
    document.getElementById("log-" + axis).checked = log;
    if (!quiet) draw();
  }

  // ------------------------------------------------------------------ Pareto front

  function better(a, b, direction) { return direction === "max" ? a > b : a < b; }
  function atLeast(a, b, direction) { return direction === "max" ? a >= b : a <= b; }

  /* Points no other point of the same task beats on both axes (at least as good on both,
     strictly better on one); equal points are all kept. */
  function paretoFront(points) {
    return points.filter((p) => !points.some((q) => q !== p && q.task === p.task &&
      atLeast(q.x, p.x, state.betterX) && atLeast(q.y, p.y, state.betterY) &&
      (better(q.x, p.x, state.betterX) || better(q.y, p.y, state.betterY))));
  }

  // ------------------------------------------------------------------ scatter

  function points() {
    return visibleRows()
      .map((row) => ({ row, task: row.task, x: row.values[state.x], y: row.values[state.y] }))
      .filter((p) => finite(p.x) && finite(p.y) && (!state.logX || p.x > 0) &&
        (!state.logY || p.y > 0));
  }

  // Names come from users' files: shown as text, never read as Plotly's hover markup.
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function hoverText(row) {
    const g = row.group || {};
    const sd = g.n_seeds > 1 && finite(g.accuracy_std) ? " ± " + g.accuracy_std.toFixed(3) : "";
    return [
      "<b>" + esc(row.strategy) + "</b> · " + esc(row.task) + " · seed " + row.seed,
      esc(row.model || ""), esc(row.hardware || ""),
      esc(label(state.x)) + ": " + fmtColumn(state.x, row.values[state.x]),
      esc(label(state.y)) + ": " + fmtColumn(state.y, row.values[state.y]),
      "accuracy over " + (g.n_seeds || 1) + " seeds: " + fmtColumn("accuracy", g.accuracy_mean)
        + sd,
      "click to select",
    ].filter(Boolean).join("<br>");
  }

  function drawScatter(shown, front) {
    const tasks = [...new Set(data.rows.map((r) => r.task))].sort();
    const strategies = [...new Set(shown.map((p) => p.row.strategy))].sort();
    const traces = strategies.map((strategy) => {
      const mine = shown.filter((p) => p.row.strategy === strategy);
      return {
        type: "scatter", mode: "markers", name: strategy,
        x: mine.map((p) => p.x), y: mine.map((p) => p.y),
        customdata: mine.map((p) => p.row.cell_id),
        text: mine.map((p) => hoverText(p.row)), hovertemplate: "%{text}<extra></extra>",
        marker: { size: 11, opacity: 0.85, line: { width: 1, color: "#fff" },
                  symbol: mine.map((p) => SYMBOLS[tasks.indexOf(p.task) % SYMBOLS.length]) },
      };
    });
    for (const task of tasks) {
      const mine = front.filter((p) => p.task === task).sort((a, b) => a.x - b.x || a.y - b.y);
      if (!mine.length) continue;
      traces.push({
        type: "scatter", mode: "lines+markers", name: "Pareto front · " + task,
        x: mine.map((p) => p.x), y: mine.map((p) => p.y),
        customdata: mine.map((p) => p.row.cell_id), hoverinfo: "skip",
        // The edge of what the front dominates: along x first where lower x is better.
        line: { color: "#cf222e", width: 2, dash: "dot",
                shape: state.betterX === "min" ? "hv" : "vh" },
        marker: { size: 17, color: "rgba(0,0,0,0)", line: { color: "#cf222e", width: 2 },
                  symbol: SYMBOLS[tasks.indexOf(task) % SYMBOLS.length] },
        meta: { pareto: true, task },
      });
    }
    const selected = shown.filter((p) => state.selected.includes(p.row.cell_id));
    if (selected.length) {
      traces.push({ type: "scatter", mode: "markers", name: "selected",
        x: selected.map((p) => p.x), y: selected.map((p) => p.y), hoverinfo: "skip",
        customdata: selected.map((p) => p.row.cell_id),
        marker: { size: 22, color: "rgba(0,0,0,0)", line: { color: "#0969da", width: 3 } } });
    }
    const arrow = (direction) => (direction === "max" ? " (higher is better)"
      : " (lower is better)");
    // On a log axis over several decades, label the decades only (not 2 and 5 of each).
    const decades = (values) => {
      const positive = values.filter((v) => v > 0);
      return positive.length ? Math.log10(Math.max(...positive) / Math.min(...positive)) : 0;
    };
    const logTicks = (on, values) => (on && decades(values) >= 2 ? { dtick: 1 } : {});
    const layout = {
      margin: { l: 70, r: 10, t: 10, b: 60 }, hovermode: "closest",
      xaxis: { title: { text: label(state.x) + arrow(state.betterX) },
               type: state.logX ? "log" : "linear", zeroline: false,
               ...logTicks(state.logX, shown.map((p) => p.x)) },
      yaxis: { title: { text: label(state.y) + arrow(state.betterY) },
               type: state.logY ? "log" : "linear", zeroline: false,
               ...logTicks(state.logY, shown.map((p) => p.y)) },
      legend: { orientation: "h", y: -0.18 },
    };
    const plot = document.getElementById("scatter");
    Plotly.react(plot, traces, layout, { displaylogo: false, responsive: true });
    document.getElementById("point-count").textContent = shown.length + " of " +
      data.rows.length + " cells drawn (" + (data.rows.length - visibleRows().length) +
      " filtered out; cells without both values are not drawn). Marker shape = task.";
  }

  // ------------------------------------------------------------------ Pareto table

  function drawParetoTable(front) {
    const table = document.getElementById("pareto-table");
    const head = ["task", "kind", "strategy", "seed", label(state.x), label(state.y), "record"];
    table.tHead.replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))));
    const rows = [...front].sort((a, b) => a.task.localeCompare(b.task) || a.x - b.x);
    table.tBodies[0].replaceChildren(...rows.map((p) => el("tr", { "data-cell": p.row.cell_id },
      el("td", { text: p.task }), el("td", { text: filterValue(p.row, "kind") }),
      el("td", { text: p.row.strategy }), el("td", { text: String(p.row.seed) }), el("td", { text: fmtColumn(state.x, p.x) }),
      el("td", { text: fmtColumn(state.y, p.y) }),
      el("td", {}, el("a", { href: p.row.record, text: p.row.cell_id + ".json" })))));
    makeSortable(table);
    document.getElementById("pareto-note").textContent = front.length +
      " cells on the front of " + label(state.x) + " against " + label(state.y) +
      ", within each task.";
  }

  // ------------------------------------------------------------------ leaderboard

  function rankText(row) {
    if (!finite(row.rank)) return "—";
    if (!finite(row.rank_low) || !finite(row.rank_high)) return String(row.rank);
    return row.rank + " (" + row.rank_low + "–" + row.rank_high + ")";
  }

  function drawBoard() {
    const table = document.getElementById("board-table");
    const kept = (row) => ["task", "kind", "model", "strategy"].every((name) =>
      !state.filters[name] || state.filters[name].has(filterValue(row, name)));
    const head = ["task", "kind", "strategy", "accuracy", "rank (95%)", "tier",
                  label("trainable"), label("peak_mb"), label("train_s"), "CKA", "seeds"];
    table.tHead.replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))));
    const rows = (data.board || []).filter(kept);
    table.tBodies[0].replaceChildren(...rows.map((row) => el("tr", {},
      el("td", { text: row.task }), el("td", { text: filterValue(row, "kind") }),
      el("td", { text: row.strategy }),
      el("td", { text: fmtColumn("accuracy", row.accuracy) +
        (row.n_seeds > 1 && finite(row.accuracy_std) ? " ± " + row.accuracy_std.toFixed(3) : "") }),
      el("td", { text: rankText(row) }), el("td", { text: finite(row.tier) ? String(row.tier) : "—" }),
      el("td", { text: fmtColumn("trainable", row.trainable) }),
      el("td", { text: fmtColumn("peak_mb", row.peak_mb) }),
      el("td", { text: fmtColumn("train_s", row.train_s) }),
      el("td", { text: finite(row.cka) ? row.cka.toFixed(3) : "—" }),
      el("td", { text: String(row.n_seeds) }))));
    makeSortable(table);
  }

  // ------------------------------------------------------------------ selected cells

  function card(row) {
    const cell = cells[row.cell_id] || {};
    const g = row.group || {};
    const dl = el("dl");
    const add = (name, value) => dl.append(el("dt", { text: name }), el("dd", { text: value }));
    add("accuracy", fmtColumn("accuracy", row.values.accuracy));
    add("accuracy over seeds", fmtColumn("accuracy", g.accuracy_mean) +
      (g.n_seeds > 1 && finite(g.accuracy_std) ? " ± " + g.accuracy_std.toFixed(3) : "") +
      " (" + (g.n_seeds || 1) + ((g.n_seeds || 1) === 1 ? " seed)" : " seeds)"));
    for (const key of ["macro_f1", "trainable", "peak_mb", "memory_p99_mb", "memory_mean_mb",
                       "train_samples_per_s", "mfu"]) {
      if (columns.has(key)) add(label(key), fmtColumn(key, row.values[key]));
    }
    const times = cell.times || {};
    for (const name of ["train_s", "total_s"]) {
      if (finite(times[name])) add(name.replace(/_s$/, "") + " time (s)", fmt(times[name]));
    }
    const phases = el("details", {}, el("summary", { text: "time per phase" }));
    const pdl = el("dl");
    for (const [name, value] of Object.entries(times)) {
      if (finite(value) && name !== "total_s") {
        pdl.append(el("dt", { text: name.replace(/_s$/, "") }), el("dd", { text: fmt(value) + " s" }));
      }
    }
    phases.append(pdl);
    const settings = el("details", {}, el("summary", { text: "settings" }));
    const sdl = el("dl");
    for (const [name, value] of Object.entries(cell.settings || {})) {
      if (value === null || value === undefined) continue;
      sdl.append(el("dt", { text: name }), el("dd", {
        text: typeof value === "object" ? JSON.stringify(value) : String(value) }));
    }
    settings.append(sdl);
    return el("div", { class: "cell-card", "data-cell": row.cell_id },
      el("h3", { text: row.strategy + " · " + row.task + " · seed " + row.seed }),
      el("div", { class: "hint", text: [row.kind, row.model, row.hardware, row.precision]
        .filter(Boolean).join(" · ") }),
      dl, phases, settings, el("div", {}, el("a", { href: row.record, text: "record (JSON)" })));
  }

  function toggle(cellId) {
    const at = state.selected.indexOf(cellId);
    if (at >= 0) state.selected.splice(at, 1); else state.selected.push(cellId);
    draw();
  }

  function emptyHint(traces, text) {
    return traces.length ? [] : [{ text, showarrow: false, xref: "paper", yref: "paper",
                                   x: 0.5, y: 0.5, font: { color: "#57606a", size: 13 } }];
  }

  function drawSelected() {
    const rows = state.selected.map((id) => data.rows.find((r) => r.cell_id === id))
      .filter(Boolean);
    document.getElementById("cell-details").replaceChildren(...rows.map(card));
    const metric = document.getElementById("history-metric").value;
    const history = rows.map((row) => {
      const entries = ((cells[row.cell_id] || {}).history || []).filter(
        (e) => finite(e[metric]));
      return { type: "scatter", mode: "lines+markers", name: row.strategy + " s" + row.seed +
               " · " + row.task, x: entries.map((e) => e.step), y: entries.map((e) => e[metric]) };
    });
    Plotly.react("history-plot", history, {
      margin: { l: 60, r: 10, t: 10, b: 45 },
      xaxis: { title: { text: "optimizer step" }, visible: history.length > 0 },
      yaxis: { title: { text: metric.replace(/_/g, " ") }, visible: history.length > 0 },
      showlegend: true,
      annotations: emptyHint(history, "click points in the scatter to draw their curves"),
      legend: { orientation: "h", y: -0.25 } }, { displaylogo: false, responsive: true });
    drawMemory(rows);
  }

  /* The phases of one cell as shaded bands behind the curves (those of the first cell drawn:
     cells differ in their phases' lengths), named where a band is wide enough to read. */
  function phaseBands(memory) {
    const shapes = [], labels = [];
    if (!memory) return { shapes, labels };
    const t = memory.t_s, phase = memory.phase, end = t[t.length - 1] || 1;
    let start = 0;
    for (let i = 1; i <= t.length; i++) {
      if (i < t.length && phase[i] === phase[start]) continue;
      const x0 = t[start], x1 = i < t.length ? t[i] : end;
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1, layer: "below",
                    line: { width: 0 }, fillcolor: shapes.length % 2 ? "#f3f4f6" : "#e8f0fe" });
      if ((x1 - x0) / end > 0.06) {
        labels.push({ x: (x0 + x1) / 2, y: 1, xref: "x", yref: "paper", yanchor: "bottom",
                      text: esc(phase[start]), showarrow: false,
                      font: { size: 10, color: "#57606a" } });
      }
      start = i;
    }
    return { shapes, labels };
  }

  function drawMemory(rows) {
    const select = document.getElementById("memory-metric");
    const available = new Set();
    rows.forEach((row) => { const m = (cells[row.cell_id] || {}).memory;
      if (m) m.metrics.forEach((name) => available.add(name)); });
    const current = select.value;
    select.replaceChildren(el("option", { value: "", text: "primary (device on GPU, RSS on CPU)" }),
      ...[...available].sort().map((name) => el("option", { value: name,
        text: name.replace(/_bytes$/, "").replace(/_/g, " ") })));
    select.value = available.has(current) ? current : "";
    const missing = [];
    const traces = [];
    for (const row of rows) {
      const memory = (cells[row.cell_id] || {}).memory;
      const metric = select.value || (memory && memory.primary);
      if (!memory || !memory[metric]) { missing.push(row.strategy + " s" + row.seed); continue; }
      traces.push({ type: "scatter", mode: "lines", name: row.strategy + " s" + row.seed +
        " · " + row.task, x: memory.t_s, y: memory[metric].map((v) => v / MIB),
        text: memory.phase, hovertemplate: "%{x:.1f} s · %{text}<br>%{y:.0f} MiB<extra></extra>" });
    }
    const bands = phaseBands(rows.map((row) => (cells[row.cell_id] || {}).memory)
      .find((memory) => memory && memory.t_s.length));
    Plotly.react("memory-plot", traces, {
      margin: { l: 60, r: 10, t: 24, b: 45 }, shapes: bands.shapes,
      xaxis: { title: { text: "seconds into the cell" }, visible: traces.length > 0 },
      yaxis: { title: { text: "MiB" }, visible: traces.length > 0 }, showlegend: true,
      legend: { orientation: "h", y: -0.25 },
      annotations: [...bands.labels, ...emptyHint(traces, rows.length
        ? "no memory series in these records" : "click points in the scatter to draw their memory")] },
    { displaylogo: false, responsive: true });
    document.getElementById("memory-note").textContent = missing.length
      ? "No memory series in the record of " + missing.join(", ") +
        " (recorded before peft-arena sampled memory over time)." : "";
  }

  // ------------------------------------------------------------------ sortable tables

  const SCALE = { K: 1e3, M: 1e6, B: 1e9 };
  /* The number a cell starts with ("0.915 ± 0.007", "148.2K", "35.9%", "2 (+1 failed)"), or
     null for text, dashes and failures. */
  function sortKey(text) {
    const match = text.replace(/,/g, "").replace("−", "-")
      .match(/^\s*([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*([KMB])?/i);
    if (!match) return null;
    return parseFloat(match[1]) * (SCALE[(match[2] || "").toUpperCase()] || 1);
  }

  function makeSortable(table) {
    table.classList.add("sortable");
    const headers = table.tHead ? table.tHead.rows[0].cells : [];
    [...headers].forEach((th, index) => {
      if (th.dataset.sortable) return;
      th.dataset.sortable = "1";
      th.addEventListener("click", () => {
        const descending = th.getAttribute("aria-sort") === "ascending";
        [...headers].forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        const body = table.tBodies[0];
        const rows = [...body.rows];
        const keyed = rows.map((row) => {
          const text = row.cells[index] ? row.cells[index].textContent.trim() : "";
          return { row, text, number: sortKey(text) };
        });
        const numeric = keyed.filter((k) => k.number !== null).length >= keyed.length / 2;
        keyed.sort((a, b) => {
          let order;
          if (numeric) {  // dashes and failures sort last either way
            if (a.number === null || b.number === null) return (a.number === null) - (b.number === null);
            order = a.number - b.number;
          } else {
            order = a.text.localeCompare(b.text, "en", { numeric: true });
          }
          return descending ? -order : order;
        });
        body.replaceChildren(...keyed.map((k) => k.row));
      });
    });
  }

  // ------------------------------------------------------------------ all together

  let lastShown = [], lastFront = [];
  function draw() {
    const shown = points();
    const front = paretoFront(shown);
    lastShown = shown; lastFront = front;
    drawScatter(shown, front);
    drawBoard();
    drawParetoTable(front);
    drawSelected();
  }

  buildFilters();
  buildAxes();
  draw();
  document.getElementById("scatter").on("plotly_click", (event) => {
    const point = event.points && event.points[0];
    if (point && point.customdata) toggle(point.customdata);
  });
  document.getElementById("clear-selection").addEventListener("click", () => {
    state.selected = []; draw();
  });
  document.getElementById("history-metric").addEventListener("change", drawSelected);
  document.getElementById("memory-metric").addEventListener("change", drawSelected);
  // The leaderboard follows this script in the page: sortable once it is parsed.
  const sortLeaderboard = () => document.querySelectorAll("#leaderboard table")
    .forEach(makeSortable);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", sortLeaderboard);
  } else {
    sortLeaderboard();
  }

  // For tests and the curious: what the page draws, in the page's own terms.
  window.peftExplorer = {
    state,
    setAxis,
    toggle,
    shown: () => lastShown.map((p) => ({ cell_id: p.row.cell_id, x: p.x, y: p.y })),
    front: () => lastFront.map((p) => p.row.cell_id),
  };
})();
