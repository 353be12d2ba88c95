"""Rank intervals, tiers and the order's stability across seeds (report/ranks.py), and the
compact leaderboard table that shows them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from peft_arena.report import build, ranks
from peft_arena.report.results import FRAME_COLUMNS, CellDetail, labelled, summarise

N_EXAMPLES = 200
Y_TRUE = np.arange(N_EXAMPLES) % 4


def _cells(correct_by_strategy: dict[str, list[int]], task: str = "agnews",
           predictions: bool = True) -> tuple[pd.DataFrame, dict[str, CellDetail]]:
    """A frame and details: per strategy, one seed per entry, the number of test examples
    it gets right (the first k)."""
    rows, details = [], {}
    for strategy, per_seed in correct_by_strategy.items():
        for seed, k in enumerate(per_seed):
            cell_id = f"{task}-{strategy}-{seed}"
            y_pred = Y_TRUE.copy()
            y_pred[k:] = (y_pred[k:] + 1) % 4  # wrong from example k on
            row = dict.fromkeys(FRAME_COLUMNS, math.nan)
            row.update(task=task, strategy=strategy, seed=seed, cell_id=cell_id, status="ok",
                       model="m", config_hash="h", accuracy=k / N_EXAMPLES, n_seeds=1)
            rows.append(row)
            details[cell_id] = (CellDetail(y_true=Y_TRUE, y_pred=y_pred) if predictions
                                else CellDetail())
    return labelled(pd.DataFrame(rows, columns=FRAME_COLUMNS)), details


def _by_strategy(table: pd.DataFrame) -> dict[str, tuple[int, int, int, int]]:
    return {row.strategy: (row.rank, row.rank_low, row.rank_high, row.tier)
            for row in table.itertuples()}


def test_clearly_separated_strategies_have_exact_ranks_and_tiers() -> None:
    frame, details = _cells({"a": [200], "b": [100], "c": [0]})
    table = ranks.rank_intervals(frame, details)
    # a is right on every example, c on none: no resample can reorder them.
    assert _by_strategy(table) == {"a": (1, 1, 1, 1), "b": (2, 2, 2, 2), "c": (3, 3, 3, 3)}
    assert set(table["rank_method"]) == {ranks.EXAMPLES_AND_SEEDS}


def test_identical_outcomes_share_the_first_rank_in_every_resample() -> None:
    frame, details = _cells({"a": [150], "b": [150], "c": [10]})
    assert _by_strategy(ranks.rank_intervals(frame, details)) == {
        "a": (1, 1, 1, 1), "b": (1, 1, 1, 1), "c": (3, 3, 3, 2)}


def test_one_example_apart_is_a_tie() -> None:
    # a and b differ on example 150 only. A resample leaves it out with probability
    # (1 - 1/200)^200 = 0.37: then they tie (both rank 1), otherwise a leads. So a is always
    # first, b is first in about 37% of resamples and second in the rest: b's interval is
    # 1-2, which reaches a's, and both are in tier 1.
    frame, details = _cells({"a": [151], "b": [150], "c": [0]})
    table = ranks.rank_intervals(frame, details)
    assert _by_strategy(table) == {"a": (1, 1, 1, 1), "b": (2, 1, 2, 1), "c": (3, 3, 3, 2)}


def test_without_predictions_only_the_seeds_are_resampled() -> None:
    frame, details = _cells({"a": [190, 180], "b": [100, 110]}, predictions=False)
    table = ranks.rank_intervals(frame, details)
    assert set(table["rank_method"]) == {ranks.SEEDS_ONLY}
    assert _by_strategy(table) == {"a": (1, 1, 1, 1), "b": (2, 2, 2, 2)}
    one_seed, one_details = _cells({"a": [190], "b": [100]}, predictions=False)
    single = ranks.rank_intervals(one_seed, one_details)
    assert set(single["rank_method"]) == {ranks.NO_INTERVAL}
    assert ranks.rank_text(single.iloc[0]) == "1"


def test_the_same_records_give_the_same_intervals() -> None:
    frame, details = _cells({"a": [120, 125], "b": [118, 122], "c": [121, 119]})
    first = ranks.rank_intervals(frame, details)
    pd.testing.assert_frame_equal(first, ranks.rank_intervals(frame, details))


def test_kendall_tau_between_seeds() -> None:
    same, _ = _cells({"a": [190, 180], "b": [150, 140], "c": [100, 90]})
    assert ranks.order_stability(same).tau == 1.0
    flipped, _ = _cells({"a": [190, 90], "b": [150, 140], "c": [100, 180]})
    stability = ranks.order_stability(flipped)
    assert stability.tau == -1.0 and stability.seed_pairs == 1 and stability.strategies == 3
    single, _ = _cells({"a": [190], "b": [150], "c": [100]})
    assert ranks.order_stability(single).seed_pairs == 0
    assert "not measured" in ranks.order_stability(single).text()


def test_the_leaderboard_opens_with_a_compact_table_and_folds_the_full_one() -> None:
    many = {f"m{i:02d}": [200 - 3 * i, 199 - 3 * i] for i in range(50)}
    frame, details = _cells(many)
    summary = build.with_ranks(summarise(frame), frame, details)
    markdown = build.leaderboard_markdown(
        summary, "Provenance: test", [], stability=ranks.stability_by_task(frame))
    section = markdown.split("## agnews\n", 1)[1]
    compact, rest = section.split("<details>", 1)
    tables = [line for line in compact.splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in tables[0].strip("|").split("|")]
    assert len(headers) <= 10
    assert headers[:5] == ["strategy", "kind", "accuracy", "rank (95%)", "tier"]
    assert len(tables) == 2 + 50  # header, rule, a row per method
    first = [cell.strip() for cell in tables[2].strip("|").split("|")]
    assert first[0] == "m00" and first[1] == "classification" and first[3].startswith("1 (1–")
    assert "Kendall's τ" in compact
    full_header = next(line for line in rest.splitlines() if line.startswith("|"))
    assert "vs best" in full_header and "macro F1" in full_header
    assert "</details>" in rest
