"""Retention in the report: its columns, the leaderboard, the stability-plasticity plane, and
records without the sections."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from peft_arena.records import store
from peft_arena.report import build as report
from peft_arena.report.results import load_frame, summarise
from peft_arena.report.views import plane
from tests.support.records import make_record

# strategy -> (CKA per seed, probe delta, effective rank, intruders)
KEPT = {"full": ((0.90, 0.92), -0.03, 250.0, 0), "lora": ((0.97, 0.98), 0.01, 6.5, 3),
        "ia3": ((0.995, 0.996), 0.0, 300.0, 0)}
ACCURACY = {"full": (0.92, 0.93), "lora": (0.88, 0.89), "ia3": (0.80, 0.81)}


def _with_retention(record, strategy: str, seed: int):
    ckas, delta, rank, intruders = KEPT[strategy]
    record["retention"] = {
        "measured": True, "cka": ckas[seed],
        "transfer": {"task": "banking77", "base_accuracy": 0.5, "tuned_accuracy": 0.5 + delta,
                     "delta": delta},
        "lm": {"kind": None, "reason": "encoder"}}
    record["weight_update"] = {"summary": {"modules": 12, "relative_norm": 0.01,
                                           "effective_rank_mean": rank,
                                           "effective_rank_max": rank + 1,
                                           "intruders": intruders}}
    return record


@pytest.fixture
def results(tmp_path):
    for strategy, accuracies in ACCURACY.items():
        for seed, accuracy in enumerate(accuracies):
            record = _with_retention(make_record("agnews", strategy, seed, accuracy),
                                     strategy, seed)
            store.write_record(store.record_path(tmp_path, record["cell_id"]), record)
    # An older record, with neither section, of another task.
    old = make_record("imdb", "lora", 0, 0.87)
    store.write_record(store.record_path(tmp_path, old["cell_id"]), old)
    return tmp_path


def test_retention_columns_are_read_and_summarised(results):
    frame = load_frame(results)
    full = frame[(frame["task"] == "agnews") & (frame["strategy"] == "full")]
    assert sorted(full["cka"]) == [0.90, 0.92]
    assert full["transfer_delta"].tolist() == pytest.approx([-0.03, -0.03])
    assert full["update_rank"].iloc[0] == 250.0
    old = frame[frame["task"] == "imdb"].iloc[0]
    assert math.isnan(old["cka"]) and math.isnan(old["intruders"])
    summary = summarise(frame).set_index(["task", "strategy"])
    assert summary.loc[("agnews", "lora"), "cka_mean"] == pytest.approx(0.975)
    assert summary.loc[("agnews", "lora"), "cka_std"] > 0
    assert summary.loc[("agnews", "lora"), "intruders_mean"] == 3


def test_not_measured_retention_is_nan_not_zero(tmp_path):
    record = make_record("agnews", "lora", 0, 0.9)
    record["retention"] = {"measured": False, "reason": "no probe texts", "cka": 0.0}
    store.write_record(store.record_path(tmp_path, record["cell_id"]), record)
    assert math.isnan(load_frame(tmp_path)["cka"].iloc[0])


def test_the_plane_marks_the_front(results):
    frame = load_frame(results)
    points = plane.plane_points(frame[frame["task"] == "agnews"], "strategy").set_index(
        "strategy")
    # full: most accurate; ia3: most retaining; lora: between on both, so also on the front.
    assert points["pareto"].to_dict() == {"full": True, "ia3": True, "lora": True}
    dominated = pd.concat([frame, frame[frame["strategy"] == "lora"].assign(
        strategy="worse", accuracy=0.5, cka=0.5)])
    points = plane.plane_points(dominated[dominated["task"] == "agnews"], "strategy")
    assert not points.set_index("strategy").loc["worse", "pareto"]


def test_the_report_has_the_columns_and_the_plane(results):
    result = report.build_report(results)
    chart = results / "charts" / f"{plane.PLANE_NAME}.png"
    assert chart in result.paths and chart.stat().st_size > 0
    leaderboard = (results / "leaderboard.md").read_text()
    assert "| CKA |" in leaderboard and "ΔW rank" in leaderboard
    assert "0.975 ± 0.007" in leaderboard  # lora's CKA over its two seeds


def test_a_report_without_retention_draws_no_plane(tmp_path):
    record = make_record("agnews", "lora", 0, 0.9)
    store.write_record(store.record_path(tmp_path, record["cell_id"]), record)
    result = report.build_report(tmp_path)
    assert not any(plane.PLANE_NAME in str(p) for p in result.paths)
    assert "| CKA |" not in (tmp_path / "leaderboard.md").read_text()
