"""The report's explorer: the payload built from records, and the page in a real browser
(headless Chromium driven by Playwright): filters, axes, the points and the Pareto front
drawn, checked against the records, and not one network request."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from peft_arena.records import store
from peft_arena.report import build as report
from peft_arena.report.markdown import DASH
from peft_arena.report.results import labelled, load_results, summarise
from peft_arena.report.views import explorer
from tests.support.records import make_record, markdown_row, write, write_matrix

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MIB = 1024**2

TIMELINE = {
    "interval_s": 0.05, "samples": 4, "duration_s": 0.15, "primary": "rss_bytes",
    "stats": {"rss_bytes": {"max": 700 * MIB, "mean": 550 * MIB, "p99": 690 * MIB}},
    "phases": {"train": {"samples": 4, "rss_bytes": {"max": 700 * MIB, "mean": 550 * MIB,
                                                     "p99": 690 * MIB}}},
    "series": {"t_s": [0.0, 0.05, 0.1, 0.15], "phase": ["model", "train", "train", "eval"],
               "rss_bytes": [400 * MIB, 500 * MIB, 700 * MIB, 600 * MIB]},
    "error": None,
}


def _with_timeline(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "memory": {**record["memory"], "timeline": TIMELINE}}


def _matrix(folder: Path) -> Path:
    """The report tests' matrix (older records: no memory series) plus one cell with one."""
    write_matrix(folder)
    write(folder, _with_timeline(make_record("imdb", "qlora", 0, 0.84)))
    return folder


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    return {r["cell_id"]: r for r in store.iter_records(folder) if r["status"] == "ok"}


def _pareto(points: dict[str, tuple[str, float, float]], better_x: str,
            better_y: str) -> set[str]:
    """Cells no cell of the same task beats on both axes, computed here from the records."""
    def at_least(a: float, b: float, better: str) -> bool:
        return a >= b if better == "max" else a <= b

    front = set()
    for cell, (task, x, y) in points.items():
        beaten = any(
            other != cell and otask == task and at_least(ox, x, better_x)
            and at_least(oy, y, better_y) and (ox, oy) != (x, y)
            for other, (otask, ox, oy) in points.items())
        if not beaten:
            front.add(cell)
    return front


# ------------------------------------------------------------------ payload


def test_payload_picks_numeric_columns_generically_and_copes_with_old_records(
        tmp_path: Path) -> None:
    results = load_results(_matrix(tmp_path))
    frame = labelled(results.frame).assign(retention_cka=0.9, update_rank=4.0)
    payload = explorer.build_payload(frame, summarise(results.frame), results.details,
                                     results_dir=tmp_path, report_dir=tmp_path / "out")
    columns = {c["key"]: c for c in payload["columns"]}
    # A column added to the frame later appears, with its direction from its name.
    assert columns["retention_cka"]["better"] == "max"
    assert columns["update_rank"]["better"] is None
    assert columns["accuracy"]["better"] == "max" and columns["train_s"]["better"] == "min"
    assert "seed" not in columns and "memory_p99_mb" in columns  # one record has a series
    rows = {r["cell_id"]: r for r in payload["rows"]}
    assert len(rows) == 13  # the failed cell has no point
    qlora = next(r for r in rows.values() if r["strategy"] == "qlora")
    assert qlora["values"]["memory_p99_mb"] == pytest.approx(690.0)
    assert qlora["record"] == f"../records/{qlora['cell_id']}.json"
    assert payload["cells"][qlora["cell_id"]]["memory"]["rss_bytes"][2] == 700 * MIB
    old = next(r for r in rows.values() if r["strategy"] == "full")
    assert payload["cells"][old["cell_id"]]["memory"] is None
    assert old["values"]["memory_p99_mb"] is None  # NaN becomes null, never a 0
    json.dumps(payload, allow_nan=False)


def test_leaderboard_shows_the_memory_p99_where_records_have_it(tmp_path: Path) -> None:
    results = load_results(_matrix(tmp_path))
    row = results.frame[results.frame["strategy"] == "qlora"].iloc[0]
    assert (row["memory_max_mb"], row["memory_mean_mb"], row["memory_p99_mb"],
            row["train_memory_p99_mb"]) == (700.0, 550.0, 690.0, 690.0)
    board = report.leaderboard_markdown(summarise(results.frame), "Provenance: test", [])
    assert markdown_row(board, "imdb", "qlora")["p99 MiB"] == "690"
    assert markdown_row(board, "imdb", "full")["p99 MiB"] == DASH  # an older record


def test_embedded_data_cannot_end_its_script_element() -> None:
    text = explorer.embedded_json({"task": "</script><script>alert(1)</script>", "a": "&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"task": "</script><script>alert(1)</script>", "a": "&"}


# ------------------------------------------------------------------ in a browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is in the test extra")
    if not Path(CHROMIUM).exists():
        # CI installs Chromium and sets this, so that a missing browser fails there.
        if os.environ.get("PEFT_ARENA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PEFT_ARENA_REQUIRE_BROWSER=1 but no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (CI installs the Debian package `chromium`)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _drawn(page) -> dict[str, Any]:
    """What Plotly holds in the page: the points of every strategy and the Pareto fronts."""
    return page.evaluate("""() => {
        const data = document.getElementById("scatter").data;
        const points = {}, front = {};
        for (const trace of data) {
            const target = trace.meta && trace.meta.pareto ? front : (
                trace.name === "selected" ? null : points);
            if (!target) continue;
            trace.customdata.forEach((id, i) => { target[id] = [trace.x[i], trace.y[i]]; });
        }
        return {points, front};
    }""")


@pytest.mark.slow
def test_explorer_in_a_browser_matches_the_records(browser, tmp_path: Path) -> None:
    results = _matrix(tmp_path / "results")
    # A generation cell beside the classification ones: the kind filter has two values.
    write(results, make_record("agnews-gen", "lora", 0, 0.81))
    report.build_report(results)
    records = _records(results)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    url = (results / "report.html").resolve().as_uri()
    page.goto(url)
    page.wait_for_function("window.peftExplorer !== undefined")

    # Default axes: trainable parameters (lower is better) against accuracy (higher).
    drawn = _drawn(page)
    expected = {cell: (r["spec"]["task"], r["params"]["trainable"], r["metrics"]["accuracy"])
                for cell, r in records.items()}
    assert {cell: tuple(xy) for cell, xy in drawn["points"].items()} == {
        cell: (x, pytest.approx(y)) for cell, (_, x, y) in expected.items()}
    assert set(drawn["front"]) == _pareto(expected, "min", "max")

    def board() -> list[dict[str, str]]:
        return page.evaluate("""() => {
            const table = document.getElementById("board-table");
            const head = [...table.tHead.rows[0].cells].map((c) => c.textContent);
            return [...table.tBodies[0].rows].map((r) => Object.fromEntries(
                [...r.cells].map((c, i) => [head[i], c.textContent])));
        }""")

    # Filter by kind: generation out leaves the classification cells, on the board too.
    kind = '#explorer-filters input[data-filter="kind"][value="generation"]'
    page.locator(kind).uncheck()
    classification = {cell for cell, r in records.items()
                      if r.get("task_kind", "classification") == "classification"}
    assert classification and set(_drawn(page)["points"]) == classification
    assert {row["kind"] for row in board()} == {"classification"}
    page.locator(kind).check()
    assert set(_drawn(page)["points"]) == set(expected)
    assert {(row["task"], row["kind"]) for row in board()} >= {("agnews-gen", "generation")}

    # Filter: leave agnews (both kinds) out.
    for task in ("agnews", "agnews-gen"):
        page.locator(f'#explorer-filters input[data-filter="task"][value="{task}"]').uncheck()
    imdb = {cell: point for cell, point in expected.items() if point[0] == "imdb"}
    assert set(_drawn(page)["points"]) == set(imdb)
    # The explorer's leaderboard follows the filter: one row per imdb strategy, with its rank.
    strategies = {records[cell]["spec"]["strategy"] for cell in imdb}
    assert {row["strategy"] for row in board()} == strategies
    assert {(row["task"], row["kind"]) for row in board()} == {("imdb", "classification")}
    # "1 (1–2)": a rank for every row
    assert all(row["rank (95%)"][0].isdigit() for row in board())

    # Switch the axes: training time (lower is better) against macro F1 (higher is better).
    page.select_option("#axis-x", "train_s")
    page.select_option("#axis-y", "macro_f1")
    assert page.input_value("#better-x") == "min" and page.input_value("#better-y") == "max"
    drawn = _drawn(page)
    by_time = {cell: ("imdb", records[cell]["time"]["phases"]["train_s"],
                      records[cell]["metrics"]["macro_f1"]) for cell in imdb}
    assert {cell: tuple(xy) for cell, xy in drawn["points"].items()} == {
        cell: (pytest.approx(x), pytest.approx(y)) for cell, (_, x, y) in by_time.items()}
    front = _pareto(by_time, "min", "max")
    assert set(drawn["front"]) == front
    listed = page.eval_on_selector_all("#pareto-table tbody tr", "rows => rows.map("
                                       "r => r.dataset.cell)")
    assert set(listed) == front

    # Which way is better, flipped: the front follows.
    page.select_option("#better-x", "max")
    assert set(_drawn(page)["front"]) == _pareto(by_time, "max", "max")

    # Click the cell with a memory series: its card, its curve (MiB) and its training curve.
    qlora = next(cell for cell in imdb if records[cell]["spec"]["strategy"] == "qlora")
    x, y = by_time[qlora][1:]
    box = page.evaluate("""([x, y]) => {
        const gd = document.getElementById("scatter"), l = gd._fullLayout;
        const r = gd.getBoundingClientRect();
        return [r.left + l.xaxis._offset + l.xaxis.l2p(l.xaxis.d2l(x)),
                r.top + l.yaxis._offset + l.yaxis.l2p(l.yaxis.d2l(y))];
    }""", [x, y])
    page.mouse.click(*box)
    page.wait_for_selector(f'.cell-card[data-cell="{qlora}"]')
    card = page.inner_text(f'.cell-card[data-cell="{qlora}"]')
    assert "0.840" in card or "0.84" in card
    link = page.get_attribute(f'.cell-card[data-cell="{qlora}"] a', "href")
    assert (results / link).resolve() == store.record_path(results, qlora).resolve()
    memory = page.evaluate('document.getElementById("memory-plot").data')
    assert [trace["y"] for trace in memory] == [[400, 500, 700, 600]]
    history = page.evaluate('document.getElementById("history-plot").data')
    assert history[0]["y"] == pytest.approx([h["val_accuracy"]
                                             for h in records[qlora]["history"]])
    # An older record without a memory series: said so, nothing drawn for it.
    old = next(cell for cell in imdb if records[cell]["spec"]["strategy"] == "full")
    page.evaluate(f"window.peftExplorer.toggle({json.dumps(old)})")
    assert len(page.evaluate('document.getElementById("memory-plot").data')) == 1
    assert "No memory series" in page.inner_text("#memory-note")

    # The leaderboard's tables sort on a header click.
    table = page.locator("#leaderboard table").first
    headers = table.locator("thead th").all_inner_texts()
    column = next(i for i, h in enumerate(headers) if h.startswith("train s")) + 1
    table.locator("th", has_text="train s").click()
    times = [float(t) for t in
             table.locator(f"tbody tr td:nth-child({column})").all_inner_texts()
             if t.strip() not in (DASH, "")]
    assert times and times == sorted(times)
    table.locator("th", has_text="accuracy").click()
    table.locator("th", has_text="accuracy").click()  # the second click: highest first
    accuracy_column = headers.index("accuracy") + 1
    texts = table.locator(f"tbody tr td:nth-child({accuracy_column})").all_inner_texts()
    accuracies = [float(t.split(" ± ")[0]) for t in texts[:-1]]
    assert len(accuracies) == 3 and accuracies == sorted(accuracies, reverse=True)
    assert texts[-1].startswith("failed")  # a failed cell has no score: last either way

    assert errors == []
    assert requests == [url]  # the page itself, nothing else: no network at view time
    page.close()


def test_old_records_only_still_make_an_explorer(tmp_path: Path) -> None:
    """Records made before memory over time: the explorer builds, with no memory columns,
    and its data reads back from the page fragment."""
    results = load_results(write_matrix(tmp_path))
    payload = explorer.build_payload(labelled(results.frame), summarise(results.frame),
                                     results.details, results_dir=tmp_path,
                                     report_dir=tmp_path)
    fragment = explorer.explorer_html(payload)
    data = fragment.split('<script type="application/json" id="explorer-data">', 1)[1]
    assert json.loads(data.split("</script>", 1)[0]) == payload
    assert not any(c["key"].startswith("memory_") for c in payload["columns"])
    assert len(payload["rows"]) == int((results.frame["status"] == "ok").sum())
    assert all(math.isfinite(r["values"]["accuracy"]) for r in payload["rows"])
    assert all(cell["memory"] is None for cell in payload["cells"].values())
