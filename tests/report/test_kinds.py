"""The head against the generated label (report/views/kinds.py): the chart and the table are
written for a model that ran a classification task and its `-gen` twin, and not otherwise;
their figures are the records' own; the kind is in every table of the report and the
explorer filters by it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from peft_arena.records import store
from peft_arena.report import build as report
from peft_arena.report.results import labelled, load_results, summarise
from peft_arena.report.views import explorer, kinds
from tests.support.records import make_record, write, write_matrix

CHART = Path("charts") / "head_vs_generation.png"
HEAD = {("lora", 0): 0.80, ("lora", 1): 0.84, ("ia3", 0): 0.70, ("ia3", 1): 0.74}
GENERATED = {("lora", 0): 0.86, ("lora", 1): 0.88, ("ia3", 0): 0.60, ("ia3", 1): 0.66}


def _generative(strategy: str, seed: int, accuracy: float, model: str | None = None,
                cpu: str | None = None) -> dict[str, Any]:
    """A generation cell's record: the runner's builders, then what a generative cell adds
    (invalid share, zero-shot score, decoding time)."""
    record = make_record("agnews-gen", strategy, seed, accuracy)
    assert record["task_kind"] == "generation"  # the builders read the task's kind
    if model:
        record["spec"]["model"] = model
    record["metrics"]["invalid_share"] = 0.01 * (seed + 1)
    record["metrics"]["zero_shot"] = {"accuracy": 0.25, "macro_f1": 0.1, "invalid_share": 0.9}
    record["time"]["phases"]["decode_s"] = 3.0 + seed
    record["time"]["phases"]["train_s"] = 40.0 + seed
    if cpu:
        record["environment"]["hardware"]["cpu"] = cpu
    return record


def _both_ways(folder: Path, *, generation_model: str | None = None,
               generation_cpu: str | None = None) -> Path:
    for (strategy, seed), accuracy in HEAD.items():
        write(folder, make_record("agnews", strategy, seed, accuracy))
    for (strategy, seed), accuracy in GENERATED.items():
        write(folder, _generative(strategy, seed, accuracy, generation_model, generation_cpu))
    return folder


def test_a_task_run_both_ways_gets_its_chart_and_table(tmp_path: Path) -> None:
    results = _both_ways(tmp_path / "results")
    built = report.build_report(results)
    chart = results / CHART
    assert chart in built.paths and chart.stat().st_size > 10_000
    leaderboard = (results / "leaderboard.md").read_text()
    assert "[Head against generated label](charts/head_vs_generation.png)" in leaderboard
    # The table under agnews-gen's leaderboard, one row per strategy, from the records.
    section = leaderboard.split("**Head against generated label**", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")][2:4]
    rows = {cells[0]: cells for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines)}
    assert set(rows) == {"ia3", "lora"}
    for strategy in ("ia3", "lora"):
        head = np.mean([a for (s, _), a in HEAD.items() if s == strategy])
        generated = np.mean([a for (s, _), a in GENERATED.items() if s == strategy])
        cells = rows[strategy]
        assert cells[1:4] == [f"{head:.3f}", f"{generated:.3f}",
                              f"{100 * (generated - head):+.1f}".replace("-", "−")]
        assert cells[4] == "1.5%" and cells[5] == "0.250"  # invalid share, zero-shot
        assert cells[7] == "40" and cells[8] == "3.5"  # generated train s, decode s
    assert "Times on AMD EPYC" in section.split("\n\n")[2]


def test_the_comparison_holds_each_ways_seeds_apart(tmp_path: Path) -> None:
    frame = labelled(load_results(_both_ways(tmp_path)).frame)
    assert kinds.twin_pairs(frame) == [(frame["model"].iloc[0], "agnews", "agnews-gen")]
    table = kinds.comparison(frame, *kinds.twin_pairs(frame)[0]).set_index(["strategy", "way"])
    assert table.loc[("lora", kinds.HEAD), "accuracy_mean"] == pytest.approx(0.82)
    assert table.loc[("lora", kinds.GENERATED), "accuracy_mean"] == pytest.approx(0.87)
    assert table.loc[("ia3", kinds.GENERATED), "decode_s_mean"] == pytest.approx(3.5)
    assert np.isnan(table.loc[("ia3", kinds.HEAD), "decode_s_mean"])  # a head decodes nothing
    assert set(table["n_seeds"]) == {2}


@pytest.mark.parametrize("case", ["classification only", "generation only", "other model"])
def test_no_chart_without_both_ways_on_one_model(case: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    if case == "classification only":
        write_matrix(results)
    elif case == "generation only":
        for (strategy, seed), accuracy in GENERATED.items():
            write(results, _generative(strategy, seed, accuracy))
    else:  # the head on one model, the generated label on another: nothing to compare
        _both_ways(results, generation_model="another-model")
    built = report.build_report(results)
    assert not (results / CHART).exists() and results / CHART not in built.paths
    leaderboard = (results / "leaderboard.md").read_text()
    assert "Head against generated label" not in leaderboard


def test_times_from_different_hardware_are_said_to_be(tmp_path: Path) -> None:
    frame = labelled(load_results(_both_ways(tmp_path, generation_cpu="Intel Xeon")).frame)
    lines = kinds.comparison_lines(frame)["agnews-gen"]
    note = next(line for line in lines if line.startswith("Times"))
    assert note.startswith("Times on different hardware, not comparable")
    assert "generated label on Intel Xeon" in note and "head on AMD EPYC" in note


def test_every_table_of_the_report_names_the_kind(tmp_path: Path) -> None:
    results = _both_ways(tmp_path / "results", generation_cpu="Intel Xeon")
    # A second hardware for agnews-gen's ia3, so its other-hardware table is written too.
    extra = _generative("ia3", 2, 0.62)
    write(results, extra)
    report.build_report(results)
    leaderboard = (results / "leaderboard.md").read_text()
    main, _, details = leaderboard.partition("\n## Details\n")
    tables = [block for block in main.split("\n\n") if block.startswith("|")]
    kinded = [block for block in tables if "| kind |" in block.splitlines()[0]]
    both_ways = [block for block in tables if "| head acc. |" in block.splitlines()[0]]
    assert len(tables) == len(kinded) + len(both_ways) and kinded and both_ways
    assert any(line.startswith("| Intel Xeon") or line.startswith("| AMD EPYC")
               for block in kinded for line in block.splitlines())  # the hardware table
    # Per-task detail (phases, per-class F1) is headed by its task and its kind.
    heading, headed = None, 0
    for block in (part.strip() for part in details.split("\n\n")):
        if block.startswith("### "):
            heading = block.splitlines()[0]
        elif block.startswith("|"):
            assert heading in ("### agnews (classification)", "### agnews-gen (generation)")
            headed += 1
    assert headed >= 2


def test_the_explorer_filters_by_kind(tmp_path: Path) -> None:
    results = load_results(_both_ways(tmp_path))
    frame = labelled(results.frame)
    payload = explorer.build_payload(frame, summarise(results.frame), results.details,
                                     results_dir=tmp_path, report_dir=tmp_path)
    assert "kind" in payload["filters"]
    records = {r["cell_id"]: r for r in store.iter_records(tmp_path)}
    assert {row["cell_id"]: row["kind"] for row in payload["rows"]} == {
        cell: record["task_kind"] for cell, record in records.items()}
    assert {(row["task"], row["kind"]) for row in payload["board"]} == {
        ("agnews", "classification"), ("agnews-gen", "generation")}


def test_records_without_a_kind_read_as_classification(tmp_path: Path) -> None:
    old = copy.deepcopy(make_record("agnews", "lora", 0, 0.8))
    del old["task_kind"]
    write(tmp_path, old)
    results = load_results(tmp_path)
    payload = explorer.build_payload(labelled(results.frame), summarise(results.frame),
                                     results.details, results_dir=tmp_path,
                                     report_dir=tmp_path)
    assert [row["kind"] for row in payload["rows"]] == ["classification"]
    assert [row["kind"] for row in payload["board"]] == ["classification"]
    assert pd.isna(results.frame["kind"]).sum() == 0
