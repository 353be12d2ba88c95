"""Default against tuned in the report (report/tuning.py) and the labels that keep them
apart."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from peft_arena.report import tuning
from peft_arena.report.results import FRAME_COLUMNS, labelled, summarise


def _row(strategy: str, seed: int, accuracy: float, config_hash: str,
         tuned_from: str | None = None) -> dict:
    row = dict.fromkeys(FRAME_COLUMNS, math.nan)
    row.update(task="agnews", strategy=strategy, seed=seed, model="m", status="ok",
               config_hash=config_hash, cell_id=f"agnews__{strategy}__seed{seed}__{config_hash}",
               accuracy=accuracy)
    if tuned_from:
        row.update(tune_budget=4, tune_trials_s=120.0, tune_default_hash=tuned_from,
                   tune_settings="learning_rate=0.006, r=16")
    return row


def _frame() -> pd.DataFrame:
    return labelled(pd.DataFrame([
        _row("lora", 0, 0.80, "d1"), _row("lora", 1, 0.82, "d1"),
        _row("lora", 0, 0.86, "t1", tuned_from="d1"), _row("lora", 1, 0.88, "t1", "d1"),
        # ia3's search kept its default: the tuned cells are the default cells.
        _row("ia3", 0, 0.85, "d2", tuned_from="d2"), _row("ia3", 1, 0.85, "d2", "d2"),
        _row("full", 0, 0.90, "d3"),
    ], columns=FRAME_COLUMNS))


def test_tuned_cells_are_labelled_beside_their_defaults() -> None:
    frame = _frame()
    assert sorted(set(frame["label"])) == ["full", "ia3 tuned", "lora", "lora tuned"]
    summary = summarise(frame)
    assert set(summary["strategy"]) == {"full", "ia3 tuned", "lora", "lora tuned"}


def test_default_against_tuned_gain_and_cost() -> None:
    table = tuning.default_against_tuned(_frame()).set_index("strategy")
    assert table.loc["lora", "default_accuracy"] == pytest.approx(0.81)
    assert table.loc["lora", "tuned_accuracy"] == pytest.approx(0.87)
    assert table.loc["lora", "gain"] == pytest.approx(0.06)
    assert table.loc["ia3", "gain"] == 0  # the same cells on both sides
    assert table.loc["lora", "budget"] == 4 and table.loc["lora", "trials_s"] == 120
    assert "full" not in table.index  # never searched
    lines = tuning.task_lines("agnews", tuning.default_against_tuned(_frame()))
    assert lines[0].startswith("**Default against tuned**") and "4 trials" in lines[0]
    row = next(line for line in lines if line.startswith("| lora"))
    assert "| 0.810 | 0.870 | +6.0 | 120 | learning_rate=0.006, r=16 |" in row


def test_no_search_no_section() -> None:
    frame = labelled(pd.DataFrame([_row("lora", 0, 0.8, "d1")], columns=FRAME_COLUMNS))
    assert tuning.default_against_tuned(frame).empty
    assert tuning.task_lines("agnews", tuning.default_against_tuned(frame)) == []
