"""Report: summary statistics, markdown leaderboard, CSVs, charts, tolerant record reading."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from peft_arena import report, store
from peft_arena.errors import UserError
from peft_arena.spec import CellSpec

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOTAL = 22_713_216
TASKS = ("agnews", "imdb")
# (task, strategy) -> per-seed accuracy. Chosen so the best strategy differs between tasks.
ACCURACY = {
    ("agnews", "full"): (0.91, 0.92),
    ("agnews", "lora"): (0.89, 0.88),
    ("agnews", "ia3"): (0.80, 0.83),
    ("imdb", "full"): (0.86, 0.85),
    ("imdb", "lora"): (0.87, 0.88),
    ("imdb", "ia3"): (0.79, 0.77),
}
TRAINABLE = {"full": TOTAL, "lora": 148_224, "ia3": 9_984}
TRAIN_S = {"full": 120.0, "lora": 60.0, "ia3": 45.0}
PEAK_MIB = {"full": 2048.0, "lora": 1024.0, "ia3": 900.0}
SEEDS = (0, 1)


def make_record(
    task: str, strategy: str, seed: int, accuracy: float | None, **spec_overrides: Any
) -> dict[str, Any]:
    """A record shaped like the runner's (schema v1); accuracy None makes a failed cell."""
    spec = CellSpec(
        model=MODEL, task=task, strategy=strategy, seed=seed, max_length=64, batch_size=16,
        **spec_overrides,
    )
    failed = accuracy is None
    trainable = TRAINABLE.get(strategy, 1_000)
    train_s = TRAIN_S.get(strategy, 10.0) + seed  # seeds differ, so the std is not zero
    return {
        "schema_version": store.SCHEMA_VERSION,
        "cell_id": spec.cell_id,
        "status": "failed" if failed else "ok",
        "spec": spec.to_dict(),
        "metrics": {} if failed else {
            "accuracy": accuracy, "macro_f1": accuracy - 0.01, "eval_loss": 1 - accuracy,
            "val_accuracy": accuracy, "val_macro_f1": accuracy - 0.02,
        },
        "params": {
            "trainable": trainable, "total": TOTAL, "trainable_pct": 100 * trainable / TOTAL,
        },
        "time": {
            "total_s": train_s + 15.0,
            "phases": {"data_s": 5.0, "tokenize_s": 2.0, "model_s": 1.0, "train_s": train_s,
                       "eval_s": 7.0},
            "train_samples_per_s": 1000.0 / train_s, "train_tokens_per_s": 64000.0 / train_s,
            "eval_samples_per_s": 300.0,
        },
        "memory": {
            "peak_bytes": int((PEAK_MIB.get(strategy, 500.0) + 10 * seed) * 1024**2),
            "source": "cpu_rss",
        },
        "history": [] if failed else [
            {"epoch": 1, "step": 10, "train_loss": 0.5, "val_loss": 0.4,
             "val_accuracy": accuracy, "val_macro_f1": accuracy - 0.02},
        ],
        "error": {"type": "OutOfMemoryError", "message": "CUDA out of memory", "phase": "train"}
        if failed else None,
        "environment": {
            "versions": {"torch": "2.4.1", "peft": "0.17.0"},
            "hardware": {"cpu": "AMD EPYC 7B13", "gpu": None},
            "precision": "fp32", "threads": 8, "git_commit": "a" * 40,
        },
        "started_at": "2025-01-01T00:00:00Z",
        "finished_at": "2025-01-01T00:02:00Z",
    }


def write(results: Path, record: dict[str, Any]) -> None:
    store.write_record(store.record_path(results, record["cell_id"]), record)


def write_matrix(folder: Path) -> Path:
    """2 tasks x 3 strategies x 2 seeds, plus one failed cell (agnews / adalora)."""
    for (task, strategy), accuracies in ACCURACY.items():
        for seed, accuracy in zip(SEEDS, accuracies, strict=True):
            write(folder, make_record(task, strategy, seed, accuracy))
    write(folder, make_record("agnews", "adalora", 0, None))
    return folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A fresh matrix that a test may add files to."""
    return write_matrix(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> report.ReportResult:
    """One report shared by the read-only tests (drawing charts takes a second or two)."""
    return report.build_report(write_matrix(tmp_path_factory.mktemp("results")))


def leaderboard(result: report.ReportResult) -> str:
    (path,) = [p for p in result.paths if p.name == "leaderboard.md"]
    return path.read_text(encoding="utf-8")


def summary_row(summary: pd.DataFrame, task: str, strategy: str) -> pd.Series:
    rows = summary[(summary["task"] == task) & (summary["strategy"] == strategy)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def markdown_row(markdown: str, task: str, strategy: str) -> dict[str, str]:
    """The cells of one strategy's row in one task's table, keyed by column header."""
    section = markdown.split(f"## {task}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == strategy:
            return dict(zip(headers, cells, strict=True))
    raise AssertionError(f"no row for {strategy} in {task}:\n{section}")


def test_summary_mean_and_std_match_numpy(built: report.ReportResult) -> None:
    for (task, strategy), accuracies in ACCURACY.items():
        row = summary_row(built.summary, task, strategy)
        assert row["accuracy_mean"] == pytest.approx(np.mean(accuracies))
        assert row["accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
        train = [TRAIN_S[strategy] + seed for seed in SEEDS]
        assert row["train_s_mean"] == pytest.approx(np.mean(train))
        assert row["train_s_std"] == pytest.approx(np.std(train, ddof=1))
        peak = [PEAK_MIB[strategy] + 10 * seed for seed in SEEDS]
        assert row["peak_mb_mean"] == pytest.approx(np.mean(peak))
        assert row["n_seeds"] == 2 and row["n_failed"] == 0 and row["status"] == "ok"
        assert row["trainable"] == TRAINABLE[strategy]


def test_frame_flattens_records(built: report.ReportResult) -> None:
    frame = built.frame
    assert len(frame) == 13
    row = frame[(frame["task"] == "imdb") & (frame["strategy"] == "lora") & (frame["seed"] == 1)]
    row = row.iloc[0]
    assert row["accuracy"] == pytest.approx(0.88)
    assert row["peak_mb"] == pytest.approx(PEAK_MIB["lora"] + 10)
    assert row["train_s"] == pytest.approx(61.0) and row["eval_s"] == pytest.approx(7.0)
    assert row["max_length"] == 64 and row["batch_size"] == 16
    assert row["precision"] == "fp32" and row["model"] == MODEL
    expected_hash = CellSpec(MODEL, "imdb", "lora", max_length=64, batch_size=16).config_hash()
    assert row["config_hash"] == expected_hash


def test_best_accuracy_is_bold_and_worse_is_not(built: report.ReportResult) -> None:
    markdown = leaderboard(built)
    best = markdown_row(markdown, "agnews", "full")
    worse = markdown_row(markdown, "agnews", "ia3")
    assert best["accuracy"] == "**0.915 ± 0.007**"
    assert not worse["accuracy"].startswith("**")
    # On imdb the winner is lora, not full: bolding follows the data, not the row.
    assert markdown_row(markdown, "imdb", "lora")["accuracy"] == "**0.875 ± 0.007**"
    assert not markdown_row(markdown, "imdb", "full")["accuracy"].startswith("**")
    # Lowest is best for cost columns; equal total params everywhere -> nothing to bold.
    assert markdown_row(markdown, "agnews", "ia3")["train s"] == "**45.5**"
    assert markdown_row(markdown, "agnews", "ia3")["trainable params"] == "**10.0K**"
    assert markdown_row(markdown, "agnews", "lora")["trainable params"] == "148.2K"
    assert markdown_row(markdown, "agnews", "full")["total params"] == "22.7M"


def test_rows_are_sorted_by_accuracy(built: report.ReportResult) -> None:
    agnews = built.summary[built.summary["task"] == "agnews"]
    assert list(agnews["strategy"]) == ["full", "lora", "ia3", "adalora"]


def test_failed_cell_is_failed_not_zero(built: report.ReportResult) -> None:
    row = summary_row(built.summary, "agnews", "adalora")
    assert row["status"] == "failed" and row["n_seeds"] == 0 and row["n_failed"] == 1
    assert row["error_type"] == "OutOfMemoryError"
    assert math.isnan(row["accuracy_mean"]) and math.isnan(row["train_s_mean"])
    cells = markdown_row(leaderboard(built), "agnews", "adalora")
    assert cells["accuracy"] == "failed (OutOfMemoryError)"
    assert cells["seeds"] == "1 failed"
    assert not any(cell.startswith(("0", "**0")) for cell in cells.values())
    # A failed cell has no time or memory, so it cannot "win" the lowest-cost bold either.
    assert "**" not in "".join(cells.values())
    assert "adalora" not in set(built.frame.loc[built.frame["status"] == "ok", "strategy"])


def test_partial_failure_keeps_the_successful_seeds(results: Path) -> None:
    write(results, make_record("imdb", "lora", 2, None))
    row = summary_row(report.summarise(report.load_frame(results)), "imdb", "lora")
    assert row["status"] == "partial" and row["n_seeds"] == 2 and row["n_failed"] == 1
    assert row["accuracy_mean"] == pytest.approx(0.875)  # the failed seed is not a 0


def test_two_configs_of_one_strategy_are_not_averaged(results: Path) -> None:
    base = make_record("imdb", "lora", 0, 0.1)["cell_id"].rsplit("__", 1)[-1]
    other = make_record("imdb", "lora", 0, 0.50, learning_rate=1e-3)
    write(results, other)
    summary = report.summarise(report.load_frame(results))
    imdb = summary[(summary["task"] == "imdb") & (summary["base_strategy"] == "lora")]
    expected = {f"lora@{base}": 0.875, f"lora@{other['cell_id'].rsplit('__', 1)[-1]}": 0.50}
    assert dict(zip(imdb["strategy"], imdb["accuracy_mean"], strict=True)) == pytest.approx(
        expected
    )
    # Other tasks keep the plain name.
    assert "lora" in set(summary.loc[summary["task"] == "agnews", "strategy"])


def test_csv_round_trip(built: report.ReportResult) -> None:
    results = built.paths[0].parent  # out_dir
    types = {"config_hash": str}  # a hash of digits must stay text
    frame = pd.read_csv(results / "results.csv", dtype=types)
    pd.testing.assert_frame_equal(frame, built.frame, check_dtype=False)
    summary = pd.read_csv(results / "summary.csv", dtype=types)
    pd.testing.assert_frame_equal(summary, built.summary, check_dtype=False)


def test_charts_exist_and_are_linked(built: report.ReportResult) -> None:
    results = built.paths[0].parent  # out_dir
    pngs = sorted((results / "charts").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(
        ["accuracy", "macro_f1", "trainable_params", "train_time", "peak_memory"]
    )
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
        assert png in built.paths
    markdown = (results / "leaderboard.md").read_text()
    for png in pngs:
        assert f"(charts/{png.name})" in markdown


def test_out_dir_is_separate_from_results(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "report-out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean report raises no warnings (pandas, seaborn)
        result = report.build_report(results, out)
    assert (out / "leaderboard.md").is_file() and (out / "charts" / "accuracy.png").is_file()
    assert all(out in p.parents for p in result.paths)
    assert not (results / "leaderboard.md").exists()


def test_leaderboard_mentions_provenance_and_memory_source(built: report.ReportResult) -> None:
    markdown = leaderboard(built)
    assert MODEL in markdown and "fp32" in markdown and "AMD EPYC 7B13" in markdown
    assert "aaaaaaaaaa" in markdown and "a" * 40 not in markdown  # commit shortened
    assert "CPU RSS" in markdown and "NVML" in markdown
    assert "13 records (1 failed)" in built.provenance


def test_corrupt_and_foreign_files_are_skipped(results: Path) -> None:
    folder = store.records_dir(results)
    (folder / "broken.json").write_text('{"schema_version": 1, "spec": ')
    (folder / "foreign.json").write_text('{"name": "not a record"}')
    with pytest.warns(UserWarning) as caught:
        frame = report.load_frame(results)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.json" in messages and "foreign.json" in messages
    assert len(frame) == 13


def test_record_without_optional_parts_does_not_crash(tmp_path: Path) -> None:
    minimal = {"schema_version": 1, "cell_id": "sst2__lora__seed3__0123456789",
               "spec": {"model": MODEL}, "status": "ok", "metrics": {"accuracy": 0.7},
               "params": None, "time": {"phases": "?"}, "environment": {"hardware": "x"}}
    store.write_record(store.record_path(tmp_path, minimal["cell_id"]), minimal)
    frame = report.load_frame(tmp_path)
    row = frame.iloc[0]
    assert (row["task"], row["strategy"], row["seed"]) == ("sst2", "lora", 3)
    assert row["config_hash"] == "0123456789" and row["accuracy"] == pytest.approx(0.7)
    assert math.isnan(row["train_s"]) and math.isnan(row["peak_mb"])
    result = report.build_report(tmp_path)  # a report of one sparse record still works
    assert "0.700" in leaderboard(result)


@pytest.mark.parametrize("make_folder", [False, True])
def test_empty_results_folder_is_a_user_error(tmp_path: Path, make_folder: bool) -> None:
    if make_folder:
        store.records_dir(tmp_path).mkdir()
    with pytest.raises(UserError, match=r"No records in .*peft-arena run"):
        report.build_report(tmp_path)


def test_rich_table_has_a_row_per_summary_row(built: report.ReportResult) -> None:
    table = report.rich_table(built.summary)
    assert table.row_count == len(built.summary) == 7
    headers = [c.header for c in table.columns]
    assert headers[:3] == ["task", "strategy", "accuracy"] and headers[-1] == "status"
    status = list(table.columns[-1].cells)
    assert sum("failed (OutOfMemoryError)" in s for s in status) == 1


@pytest.mark.parametrize(
    ("count", "text"),
    [(148_224, "148.2K"), (22_713_216, "22.7M"), (999, "999"), (999_960, "1.0M"), (7e9, "7.0B")],
)
def test_human_count(count: float, text: str) -> None:
    assert report.human_count(count) == text
