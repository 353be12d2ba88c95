"""Report: summary statistics, markdown leaderboard, CSVs, charts, tolerant record reading."""

from __future__ import annotations

import base64
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from peft_arena.cell.entry import run_cell
from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.data.loading import load_task_data
from peft_arena.measure.metrics import confidence_summary, per_class_f1
from peft_arena.records import store
from peft_arena.report import breakdown, stats
from peft_arena.report import build as report
from peft_arena.report.results import labelled, load_frame, load_results, summarise
from peft_arena.report.views import charts
from tests.support.records import (
    ACCURACY,
    LABELS,
    MODEL,
    PEAK_MIB,
    SEEDS,
    TRAIN_S,
    TRAINABLE,
    make_record,
    markdown_row,
    predictions,
    write,
    write_matrix,
)
from tests.support.specs import tiny_spec
from tests.support.synthetic import KEYWORDS


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
    # Lowest is best for cost columns, highest for throughput.
    ia3 = markdown_row(markdown, "agnews", "ia3")
    assert ia3["train s"] == "**45.5**"
    assert ia3["trainable params"] == "**10.0K**"
    assert ia3["peak MiB"] == "**905**"
    assert ia3["samples/s"] == f"**{np.mean([1000 / 45, 1000 / 46]):.1f}**"
    assert ia3["tokens/s"] == f"**{np.mean([64000 / 45, 64000 / 46]):,.0f}**"
    assert markdown_row(markdown, "agnews", "lora")["trainable params"] == "148.2K"
    assert markdown_row(markdown, "agnews", "lora")["trainable %"] == "0.653%"
    assert markdown_row(markdown, "agnews", "full")["samples/s"] == f"{1000 / 120.5:.1f}"


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
    row = summary_row(summarise(load_frame(results)), "imdb", "lora")
    assert row["status"] == "partial" and row["n_seeds"] == 2 and row["n_failed"] == 1
    assert row["accuracy_mean"] == pytest.approx(0.875)  # the failed seed is not a 0


def test_two_configs_of_one_strategy_are_not_averaged(results: Path) -> None:
    base = make_record("imdb", "lora", 0, 0.1)["cell_id"].rsplit("__", 1)[-1]
    other = make_record("imdb", "lora", 0, 0.50, learning_rate=1e-3)
    write(results, other)
    summary = summarise(load_frame(results))
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
    assert [p.stem for p in pngs] == sorted([
        "accuracy", "macro_f1", "trainable_params", "train_time", "peak_memory",
        "accuracy_vs_params", "accuracy_vs_memory", "accuracy_vs_time",
        "curves_agnews", "curves_imdb",
    ])
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
        frame = load_frame(results)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.json" in messages and "foreign.json" in messages
    assert len(frame) == 13


def test_record_without_optional_parts_does_not_crash(tmp_path: Path) -> None:
    minimal = {"schema_version": 1, "cell_id": "sst2__lora__seed3__0123456789",
               "spec": {"model": MODEL}, "status": "ok", "metrics": {"accuracy": 0.7},
               "params": None, "time": {"phases": "?"}, "environment": {"hardware": "x"}}
    store.write_record(store.record_path(tmp_path, minimal["cell_id"]), minimal)
    frame = load_frame(tmp_path)
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
    assert headers[:4] == ["task", "kind", "strategy", "accuracy"] and headers[-1] == "status"
    assert set(table.columns[1].cells) == {"classification"}  # records before generation
    status = list(table.columns[-1].cells)
    assert sum("failed (OutOfMemoryError)" in s for s in status) == 1


@pytest.mark.parametrize(
    ("count", "text"),
    [(148_224, "148.2K"), (22_713_216, "22.7M"), (999, "999"), (999_960, "1.0M"), (7e9, "7.0B")],
)
def test_human_count(count: float, text: str) -> None:
    assert report.human_count(count) == text


# --- significance -----------------------------------------------------------------------------


def board(results: Path) -> tuple[pd.DataFrame, str]:
    """Summary with verdicts, and its leaderboard, without drawing charts."""
    loaded = load_results(results)
    summary = report.with_significance(
        summarise(loaded.frame), loaded.frame, loaded.details
    )
    return summary, report.leaderboard_markdown(summary, "Provenance: test", [])


def test_welch_marks_the_clearly_worse_and_not_the_indistinguishable(tmp_path: Path) -> None:
    seeds = {"full": (0.90, 0.91, 0.92), "lora": (0.905, 0.915, 0.90), "ia3": (0.80, 0.81, 0.79)}
    for strategy, accuracies in seeds.items():
        for seed, accuracy in enumerate(accuracies):
            write(tmp_path, make_record("imdb", strategy, seed, accuracy))
    summary, markdown = board(tmp_path)
    full = seeds["full"]
    expected = {s: scipy_stats.ttest_ind(seeds[s], full, equal_var=False).pvalue
                for s in ("lora", "ia3")}
    assert expected["ia3"] < 0.05 < expected["lora"]  # the example is what it claims to be
    assert summary_row(summary, "imdb", "full")["vs_best"] == "best"
    for strategy, verdict in (("lora", "same"), ("ia3", "worse")):
        row = summary_row(summary, "imdb", strategy)
        assert row["vs_best"] == verdict and row["vs_best_test"] == "welch"
        assert row["vs_best_p"] == pytest.approx(expected[strategy])
    assert markdown_row(markdown, "imdb", "full")["vs best"] == "best"
    assert markdown_row(markdown, "imdb", "lora")["vs best"] == (
        f"≈ (t-test p={expected['lora']:.3f})"
    )
    assert markdown_row(markdown, "imdb", "ia3")["vs best"].startswith("worse (t-test p")
    assert "Welch's t-test" in markdown and "paired bootstrap" in markdown


def test_single_seed_uses_a_paired_bootstrap_over_test_examples(tmp_path: Path) -> None:
    for strategy, accuracy in (("full", 0.90), ("lora", 0.895), ("ia3", 0.70)):
        write(tmp_path, make_record("agnews", strategy, 0, accuracy))
    summary, markdown = board(tmp_path)
    ia3 = summary_row(summary, "agnews", "ia3")
    assert ia3["vs_best"] == "worse" and ia3["vs_best_test"] == "bootstrap"
    assert ia3["vs_best_diff"] == pytest.approx(0.70 - 0.90)  # paired: same examples
    assert ia3["vs_best_ci_low"] < ia3["vs_best_diff"] < ia3["vs_best_ci_high"] < 0
    lora = summary_row(summary, "agnews", "lora")
    assert lora["vs_best"] == "same" and lora["vs_best_ci_low"] < 0 < lora["vs_best_ci_high"]
    assert markdown_row(markdown, "agnews", "ia3")["vs best"].startswith(
        "worse (bootstrap −20.0 pts ["
    )


def test_no_stored_predictions_means_untested_not_a_guess(tmp_path: Path) -> None:
    for strategy, accuracy in (("full", 0.90), ("ia3", 0.70)):
        record = make_record("agnews", strategy, 0, accuracy)
        record["predictions"] = None  # a record from before predictions were kept
        write(tmp_path, record)
    summary, markdown = board(tmp_path)
    assert summary_row(summary, "agnews", "ia3")["vs_best"] == "untested"
    assert markdown_row(markdown, "agnews", "ia3")["vs best"] == "untested"


def test_paired_bootstrap_of_identical_outcomes_is_exactly_zero() -> None:
    correct = np.array([True, False, True, True])
    assert stats.paired_bootstrap(correct, correct) == (0.0, 0.0, 0.0)


# --- per-class detail, confidence, optional measurements ------------------------------------


def test_per_class_f1_section_matches_the_records(built: report.ReportResult) -> None:
    markdown = leaderboard(built)
    section = markdown.split("### agnews (classification)\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    headers = [c.strip() for c in rows[0].strip("|").split("|")]
    assert headers == ["class", "full", "lora", "ia3"]  # best strategy first, failed left out
    body = [[c.strip() for c in line.strip("|").split("|")] for line in rows[1:5]]
    expected = {}
    for strategy in ("full", "lora", "ia3"):
        per_seed = []
        for seed in SEEDS:
            accuracy = ACCURACY[("agnews", strategy)][seed]
            y_true, y_pred = predictions("agnews", strategy, seed, accuracy)
            per_seed.append(per_class_f1(np.array(y_true), np.array(y_pred), LABELS["agnews"]))
        expected[strategy] = {c: np.mean([s[c] for s in per_seed]) for c in LABELS["agnews"]}
    for cells in body:
        for strategy, text in zip(("full", "lora", "ia3"), cells[1:], strict=True):
            assert text == f"{expected[strategy][cells[0]]:.3f}"
    means = [np.mean([expected[s][cells[0]] for s in expected]) for cells in body]
    assert means == sorted(means)  # worst classes first


def test_many_classes_list_only_the_worst_ten(tmp_path: Path, monkeypatch) -> None:
    names = [f"intent_{i:02d}" for i in range(15)]
    monkeypatch.setitem(LABELS, "banking", names)
    write(tmp_path, make_record("banking", "lora", 0, 0.6))
    loaded = load_results(tmp_path)
    section = breakdown.task_section("banking", labelled(loaded.frame),
                                     summarise(loaded.frame), loaded.details)
    assert "the 10 lowest of 15 classes" in "\n".join(section)
    shown = [line.split("|")[1].strip() for line in section if line.startswith("| intent_")]
    scores = next(iter(loaded.details.values())).per_class_f1
    assert shown == sorted(scores, key=lambda c: (scores[c], names.index(c)))[:10]


def test_confidence_section_shows_the_recorded_summary(built: report.ReportResult) -> None:
    markdown = leaderboard(built)
    section = markdown.split("### imdb (classification)\n", 1)[1]
    line = next(x for x in section.splitlines() if x.startswith("| lora |") and "%" in x)
    cells = [c.strip() for c in line.strip("|").split("|")]
    summaries = []
    for seed in SEEDS:
        record = make_record("imdb", "lora", seed, ACCURACY[("imdb", "lora")][seed])
        summaries.append(record["metrics"]["confidence"])
    assert cells[1] == f"{np.mean([s['mean'] for s in summaries]):.3f}"
    assert cells[2] == f"{np.mean([s['share_above_0_9'] for s in summaries]):.1%}"
    assert cells[3] == f"{np.mean([s['ece'] for s in summaries]):.3f}"


def test_confidence_summary_by_hand() -> None:
    # Two at 0.95 (one right): bin (0.9, 1], gap |0.5 - 0.95|; two at 0.6, both right: bin
    # (0.5, 0.6], gap |1 - 0.6|. Each bin holds half the examples.
    summary = confidence_summary(np.array([0.95, 0.95, 0.6, 0.6]), np.array([1, 0, 1, 1]))
    assert summary["mean"] == pytest.approx(0.775)
    assert summary["share_above_0_9"] == pytest.approx(0.5)
    assert summary["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.4)


def test_per_class_f1_leaves_out_classes_the_split_lacks() -> None:
    scores = per_class_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert scores == pytest.approx({"a": 2 / 3, "b": 0.8})


def test_new_measurements_show_when_recorded_and_dash_when_not(tmp_path: Path) -> None:
    with_extras = make_record("imdb", "qlora", 0, 0.85)
    with_extras["compute"] = {"mfu": 0.123, "mfu_model_gemm": 0.456}
    with_extras["memory"]["weights_bytes"] = 40 * 1024**2
    write(tmp_path, with_extras)
    write(tmp_path, make_record("imdb", "lora", 0, 0.86))
    _, markdown = board(tmp_path)
    assert markdown_row(markdown, "imdb", "qlora")["MFU"] == "12.3%"
    assert markdown_row(markdown, "imdb", "qlora")["of ceiling"] == "45.6%"
    assert markdown_row(markdown, "imdb", "lora")["of ceiling"] == "—"
    assert "- **of ceiling**:" in markdown
    assert markdown_row(markdown, "imdb", "qlora")["weights MiB"] == "40"
    assert markdown_row(markdown, "imdb", "lora")["MFU"] == "—"
    assert "- **MFU**:" in markdown


def test_columns_without_any_value_are_left_out(built: report.ReportResult) -> None:
    markdown = leaderboard(built)
    assert "MFU" not in markdown and "weights MiB" not in markdown
    assert "of ceiling" not in markdown
    for header in ("accuracy", "macro F1", "vs best", "trainable params", "peak MiB",
                   "train s", "samples/s", "seeds"):
        assert f"- **{header}**:" in markdown  # every shown column is explained


# --- charts and HTML --------------------------------------------------------------------------


def test_pareto_front() -> None:
    costs = [10, 100, 100, 1000, 50]
    scores = [0.80, 0.88, 0.86, 0.92, 0.79]
    assert charts.pareto_mask(costs, scores) == [True, True, False, True, False]


def test_html_is_self_contained_with_tables_and_embedded_charts(
    built: report.ReportResult,
) -> None:
    results = built.paths[0].parent
    page = (results / "report.html").read_text(encoding="utf-8")
    assert page.count("<table>") >= 2 + 2  # a leaderboard table per task, plus detail tables
    assert "<td><strong>0.915 ± 0.007</strong></td>" in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    pngs = sorted((results / "charts").glob("*.png"))
    assert len(images) == len(pngs)
    assert {base64.b64decode(i) for i in images} == {p.read_bytes() for p in pngs}
    assert 'src="charts/' not in page
    # Scripts belong to the explorer above it (tests/test_explorer.py); the leaderboard has none.
    leaderboard_part = page.split('<div id="leaderboard">', 1)[1]
    assert "<script" not in leaderboard_part and "http" not in leaderboard_part


def test_confusion_matrices_from_stored_predictions(results: Path) -> None:
    loaded = load_results(results)
    out = results / "charts" / "confusion"
    paths = charts.write_confusions(labelled(loaded.frame), out, "label", loaded.details)
    expected = sorted({f"{t}__{s}.png" for (t, s) in ACCURACY})  # the failed cell has none
    assert sorted(p.name for p in paths) == expected == sorted(p.name for p in out.glob("*"))
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    summary = summarise(loaded.frame)
    markdown = report.leaderboard_markdown(summary, "Provenance: test", paths, base=results)
    assert "[Confusion matrix: imdb, lora](charts/confusion/imdb__lora.png)" in markdown


def test_without_chart_links_there_is_no_charts_section(built: report.ReportResult) -> None:
    markdown = report.leaderboard_markdown(built.summary, built.provenance, [])
    assert "## Charts" not in markdown and "charts/" not in markdown
    assert "## Charts" in leaderboard(built)


# --- what a real cell records -----------------------------------------------------------------


def test_runner_records_per_class_confidence_and_ordered_predictions(
    tiny_bert: Path, synth_task: Path, data_dir: Path
) -> None:
    spec = tiny_spec(tiny_bert, synth_task, "full", max_train_samples=None,
                     max_eval_samples=None, eval_batch_size=7)
    record = run_cell(spec, data_dir)
    data = load_task_data(resolve_task(str(synth_task)), data_dir, val_fraction=spec.val_fraction,
                          max_train_samples=None, max_eval_samples=None, seed=spec.data_seed)
    stored = record["predictions"]
    # Evaluation runs sorted by length in batches of 7; the record is in the split's order.
    assert stored["y_true"] == data.test.labels.tolist()
    correct = np.equal(stored["y_true"], stored["y_pred"])
    assert record["metrics"]["accuracy"] == pytest.approx(correct.mean())
    expected = per_class_f1(np.array(stored["y_true"]), np.array(stored["y_pred"]),
                            data.label_names)
    assert record["metrics"]["per_class_f1"] == pytest.approx(expected)
    assert set(expected) == set(KEYWORDS)
    confidence = record["metrics"]["confidence"]
    assert 1 / len(KEYWORDS) <= confidence["mean"] <= 1
    assert 0 <= confidence["share_above_0_9"] <= 1 and 0 <= confidence["ece"] <= 1


def test_phase_table_shows_recorded_phases_and_dashes_gaps(tmp_path: Path) -> None:
    newer = make_record("imdb", "lora", 0, 0.86)
    newer["time"]["phases"]["validate_s"] = 3.5  # newer records time validation apart
    write(tmp_path, newer)
    write(tmp_path, make_record("imdb", "ia3", 0, 0.80))
    summary, _ = board(tmp_path)
    lines = breakdown.phase_section(summary)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| ")}
    assert rows["strategy"] == ["strategy", "data", "tokenize", "model", "train", "validate",
                                "eval", "total"]
    assert rows["lora"] == ["lora", "5.0", "2.0", "1.0", "60.0", "3.5", "7.0", "75.0"]
    assert rows["ia3"][5] == "—"


def test_points_on_top_of_each_other_share_one_label() -> None:
    from peft_arena.report.views.charts import _label_clusters

    points = pd.DataFrame({"strategy": ["full", "qlora", "lora"],
                           "cost": [22.7e6, 74_498, 74_498], "accuracy": [0.746, 0.815, 0.816]})
    clusters = _label_clusters(points, "strategy")
    assert [names for names, _, _ in clusters] == [["lora", "qlora"], ["full"]]


# --- AdaLoRA ranks and tree state -------------------------------------------------------------


def test_adalora_section_shows_where_the_rank_budget_moved(tmp_path: Path) -> None:
    for seed, (query, value) in enumerate(((14, 2), (12, 4))):
        record = make_record("banking", "adalora", seed, 0.8)
        record["strategy_state"] = {
            "rank_pattern": {"bert.encoder.layer.0.attention.self.query": query,
                             "bert.encoder.layer.0.attention.self.value": value},
            "init_r": 12, "target_r": 8, "reallocated": True}
        write(tmp_path, record)
    write(tmp_path, make_record("banking", "lora", 0, 0.8))  # no ranks: not in the section
    loaded = report.load_results(tmp_path)
    section = "\n".join(breakdown.task_section("banking", report.labelled(loaded.frame),
                                               report.summarise(loaded.frame), loaded.details))
    assert "every module started at rank adalora 12" in section
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in section.splitlines() if line.startswith("| ")}
    assert rows["module"] == "adalora"  # the header: one column per AdaLoRA config
    assert rows["query"] == "13.0" and rows["value"] == "3.0"  # mean over the two seeds
    assert rows["total"] == "16"


@pytest.mark.parametrize(("flags", "text"), [
    ((False, False), "(clean tree)"),
    ((True, False), "(uncommitted changes in the tree for 1 of 2 records)"),
    ((None, None), "(tree state not recorded)"),
])
def test_provenance_line_says_whether_the_tree_was_dirty(tmp_path: Path, flags, text) -> None:
    for seed, dirty in enumerate(flags):
        record = make_record("banking", "lora", seed, 0.8)
        if dirty is not None:
            record["environment"]["git_dirty"] = dirty
        write(tmp_path, record)
    line = report.provenance_line(report.load_results(tmp_path).frame)
    assert f"git commit: {'a' * 10} {text}" in line
