"""Is a strategy's accuracy really below the best one's on a task, or within the noise?

Every strategy of a task is compared with the task's most accurate one (highest mean accuracy):

- both ran at least two seeds: Welch's t-test on the per-seed accuracies (unequal variances);
  "worse" when p < 0.05 and its mean is lower.
- otherwise: a paired percentile bootstrap over the test examples of one seed of each (the same
  seed where both have it): the 95% confidence interval of the accuracy difference; "worse"
  when the whole interval is below zero. Pairing needs the stored test predictions of both
  cells on the same test examples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from peft_arena.report.results import CellDetail

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so a report rebuilt from the same records says the same thing

BEST, SAME, WORSE, UNTESTED = "best", "same", "worse", "untested"
WELCH, BOOTSTRAP = "welch", "bootstrap"

SIGNIFICANCE_COLUMNS = ["task", "strategy", "verdict", "test", "p_value", "diff", "ci_low",
                        "ci_high", "note"]
EXPLANATION = (
    "vs best: each strategy against the task's most accurate one. With ≥ 2 seeds on both "
    "sides, Welch's t-test over the per-seed accuracies (p shown); otherwise a paired bootstrap "
    "over the test examples of one seed each (accuracy difference in points, 95% CI). "
    f"worse = significantly less accurate (p < {ALPHA:g}, or the whole CI below 0); "
    "≈ = not significantly different."
)


@dataclass(frozen=True)
class Verdict:
    task: str
    strategy: str
    verdict: str  # BEST, SAME, WORSE or UNTESTED
    test: str | None = None  # WELCH or BOOTSTRAP
    p_value: float = math.nan  # Welch
    diff: float = math.nan  # accuracy minus the best's, fraction (bootstrap)
    ci_low: float = math.nan
    ci_high: float = math.nan
    note: str | None = None  # why a comparison could not be made


def welch(values: np.ndarray, best: np.ndarray) -> float | None:
    """Two-sided p-value, or None where the test is undefined (no spread on either side)."""
    if np.ptp(values) == 0 and np.ptp(best) == 0:
        return None
    return float(stats.ttest_ind(values, best, equal_var=False).pvalue)


def paired_bootstrap(correct: np.ndarray, best_correct: np.ndarray,
                     confidence: float = 1 - ALPHA) -> tuple[float, float, float]:
    """(accuracy difference, CI low, CI high) over examples resampled with replacement."""
    diff = correct.astype(float) - best_correct.astype(float)
    if np.ptp(diff) == 0:  # identical outcomes on every example: no spread to resample
        return float(diff[0]), float(diff[0]), float(diff[0])
    result = stats.bootstrap((diff,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES,
                             confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(BOOTSTRAP_SEED))
    interval = result.confidence_interval
    return float(diff.mean()), float(interval.low), float(interval.high)


def _paired_cells(rows: pd.DataFrame, best_rows: pd.DataFrame, details: dict[str, CellDetail],
                  best_details: dict[str, CellDetail] | None = None,
                  ) -> tuple[CellDetail, CellDetail] | None:
    """Detail of one seed of each side with predictions on the same test examples
    (`best_details`: the other side's, when it comes from another results folder)."""
    def usable(frame: pd.DataFrame, found: dict[str, CellDetail]) -> dict[int, CellDetail]:
        cells = {}
        for seed, cell_id in zip(frame["seed"], frame["cell_id"], strict=True):
            detail = found.get(cell_id) if isinstance(cell_id, str) else None
            if detail is not None and detail.y_true is not None:
                cells.setdefault(int(seed) if pd.notna(seed) else -1, detail)
        return cells

    mine = usable(rows, details)
    theirs = usable(best_rows, details if best_details is None else best_details)
    if not mine or not theirs:
        return None
    common = sorted(set(mine) & set(theirs))
    a, b = (mine[common[0]], theirs[common[0]]) if common else (
        mine[min(mine)], theirs[min(theirs)])
    if not np.array_equal(a.y_true, b.y_true):
        return None  # different test examples (or order): the outcomes do not pair up
    return a, b


def _compare(task: str, label: str, rows: pd.DataFrame, best_rows: pd.DataFrame,
             details: dict[str, CellDetail],
             best_details: dict[str, CellDetail] | None = None) -> Verdict:
    accuracy, best_accuracy = rows["accuracy"].to_numpy(), best_rows["accuracy"].to_numpy()
    if len(accuracy) >= 2 and len(best_accuracy) >= 2:
        p_value = welch(accuracy, best_accuracy)
        if p_value is not None:
            worse = p_value < ALPHA and accuracy.mean() < best_accuracy.mean()
            return Verdict(task, label, WORSE if worse else SAME, WELCH, p_value=p_value)
    pair = _paired_cells(rows, best_rows, details, best_details)
    if pair is None:
        return Verdict(task, label, UNTESTED,
                       note="no paired test predictions stored for a bootstrap")
    mine, best = pair
    diff, low, high = paired_bootstrap(mine.y_pred == mine.y_true, best.y_pred == best.y_true)
    verdict = WORSE if high < 0 else SAME
    return Verdict(task, label, verdict, BOOTSTRAP, diff=diff, ci_low=low, ci_high=high)


def accuracy_change(head_rows: pd.DataFrame, base_rows: pd.DataFrame,
                    head_details: dict[str, CellDetail], base_details: dict[str, CellDetail]
                    ) -> tuple[bool | None, str]:
    """Is head's accuracy significantly different from base's, by the leaderboard's tests?
    (True/False, or None where no test applies; and the test's result as text). Rows: the
    successful per-seed records of one cell on each side."""
    task, label = str(head_rows["task"].iloc[0]), str(head_rows["strategy"].iloc[0])
    verdict = _compare(task, label, head_rows, base_rows, head_details, base_details)
    if verdict.test == WELCH:
        return verdict.p_value < ALPHA, f"t-test p={verdict.p_value:.3g}"
    if verdict.test == BOOTSTRAP:
        significant = verdict.ci_high < 0 or verdict.ci_low > 0
        return significant, (f"bootstrap 95% CI [{100 * verdict.ci_low:+.1f}, "
                             f"{100 * verdict.ci_high:+.1f}] pts")
    return None, verdict.note or "untested"


def significance(frame: pd.DataFrame, details: dict[str, CellDetail]) -> pd.DataFrame:
    """One row per (task, strategy label) with a successful seed: SIGNIFICANCE_COLUMNS.

    frame: per-record rows with a `label` column (results.labelled); details by cell_id.
    """
    verdicts: list[Verdict] = []
    ok = frame[(frame["status"] == "ok") & frame["accuracy"].notna()]
    for task, rows in ok.groupby("task", sort=True):
        groups = dict(list(rows.groupby("label", sort=True)))
        means = {label: group["accuracy"].mean() for label, group in groups.items()}
        best = min(sorted(means), key=lambda label: -means[label])  # ties: first by name
        for label, group in groups.items():
            if label == best:
                verdicts.append(Verdict(str(task), str(label), BEST))
            else:
                verdicts.append(_compare(str(task), str(label), group, groups[best], details))
    # Missing text is NaN, like missing numbers, so the table equals its own CSV read back.
    return pd.DataFrame([asdict(v) for v in verdicts], columns=SIGNIFICANCE_COLUMNS).fillna(
        math.nan)
