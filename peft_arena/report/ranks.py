"""Where does each strategy rank within a task, and how sure is that rank?

A leaderboard's order between two methods a point apart is often chance: with a few hundred
test examples and two seeds, run-to-run noise is about a point. So each strategy's rank comes
with a 95% interval from a bootstrap that resamples both sources of noise at once:

- the test examples, the same resample for every strategy (they are paired: all cells of a
  task score the same examples), drawn as multinomial counts so that a large test split costs
  one matrix product per resample rather than a gather;
- the seeds, each strategy's own successful seeds drawn with replacement.

In each resample the strategies are ranked by accuracy (1 = best, ties share the better
rank); the interval is the 2.5th to 97.5th percentile of a strategy's ranks. Where the cells
of a task stored no test predictions on common examples, only the seeds are resampled (the
method says which); with one seed and no predictions the rank has no interval.

Tiers read the intervals in order: the best strategy opens tier 1, and each next strategy
joins the open tier while its interval reaches the tier leader's worst rank; otherwise it
opens the next tier. Strategies in one tier are tied: the data cannot order them.

How stable the order is across seeds is Kendall's tau between the accuracies of each pair of
seeds, over the strategies both seeds ran (1 = the same order, 0 = unrelated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from peft_arena.report.results import CellDetail

RESAMPLES = 1000
SEED = 0  # fixed: a report rebuilt from the same records gives the same intervals
CONFIDENCE = 0.95

EXAMPLES_AND_SEEDS, SEEDS_ONLY, NO_INTERVAL = "examples+seeds", "seeds", "none"
RANK_COLUMNS = ["task", "strategy", "rank", "rank_low", "rank_high", "tier", "rank_method"]
EXPLANATION = (
    "rank: position by mean accuracy within the task (1 = best), with its 95% interval from "
    f"a bootstrap over the test examples (paired across strategies) and the seeds "
    f"({RESAMPLES} resamples). tier: strategies whose intervals overlap the tier leader's "
    "are tied (the data cannot order them); tier 1 holds the best and its ties."
)


@dataclass(frozen=True)
class Stability:
    """Kendall's tau between the per-seed orders of one task's strategies."""

    tau: float  # mean over seed pairs; NaN without two seeds over three or more strategies
    seed_pairs: int
    strategies: int

    def text(self) -> str:
        if self.seed_pairs == 0:
            return ("Order stability: not measured (needs two seeds over at least three "
                    "strategies).")
        pairs = "a pair of seeds" if self.seed_pairs == 1 else (
            f"the mean over {self.seed_pairs} pairs of seeds")
        return (f"Order stability: Kendall's τ = {self.tau:.2f} between the seeds' orders of "
                f"{self.strategies} strategies ({pairs}; 1 = the same order).")


def _per_seed_correct(rows: pd.DataFrame, details: dict[str, CellDetail],
                      reference: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The 0/1 outcomes of each seed's test predictions, and the labels they are scored on."""
    outcomes = []
    for cell_id in rows["cell_id"]:
        detail = details.get(cell_id) if isinstance(cell_id, str) else None
        if detail is None or detail.y_true is None or detail.y_pred is None:
            return [], reference
        if reference is None:
            reference = detail.y_true
        elif not np.array_equal(detail.y_true, reference):
            return [], reference  # another test set (or order): no pairing
        outcomes.append((detail.y_pred == detail.y_true).astype(np.float32))
    return outcomes, reference


def _draw_seed_means(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """per_seed: (seeds, resamples) accuracies -> (resamples,) means over seeds drawn with
    replacement."""
    n_seeds, n_resamples = per_seed.shape
    picks = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    return per_seed[picks, np.arange(n_resamples)[:, None]].mean(axis=1)


def _resampled_accuracy(groups: dict[str, pd.DataFrame], details: dict[str, CellDetail],
                        rng: np.random.Generator) -> tuple[np.ndarray | None, str]:
    """(strategies, resamples) accuracies in the groups' order, and the bootstrap used."""
    reference: np.ndarray | None = None
    outcomes: dict[str, list[np.ndarray]] = {}
    for label, rows in groups.items():
        outcomes[label], reference = _per_seed_correct(rows, details, reference)
    if reference is not None and all(outcomes.values()):
        n = len(reference)
        # Multinomial counts: each resample's weight per example; one matmul gives accuracy.
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=RESAMPLES).astype(np.float32)
        accuracy = []
        for label in groups:
            per_seed = (weights @ np.stack(outcomes[label]).T).T / n  # (seeds, resamples)
            accuracy.append(_draw_seed_means(per_seed, rng))
        return np.stack(accuracy), EXAMPLES_AND_SEEDS
    seeds = [rows["accuracy"].to_numpy(dtype=float) for rows in groups.values()]
    if max(len(s) for s in seeds) < 2:
        return None, NO_INTERVAL
    accuracy = [_draw_seed_means(np.repeat(s[:, None], RESAMPLES, axis=1), rng)
                for s in seeds]
    return np.stack(accuracy), SEEDS_ONLY


def _tiers(order: list[str], low: dict[str, int], high: dict[str, int]) -> dict[str, int]:
    tiers, tier, leader_high = {}, 0, -math.inf
    for label in order:
        if low[label] > leader_high:  # no overlap with the open tier's leader: a new tier
            tier, leader_high = tier + 1, high[label]
        tiers[label] = tier
    return tiers


def task_ranks(task: str, rows: pd.DataFrame, details: dict[str, CellDetail],
               seed: int = SEED) -> pd.DataFrame:
    """RANK_COLUMNS for one task's successful per-seed rows (a `label` column names the
    strategy as the summary does)."""
    groups = dict(list(rows.groupby("label", sort=True)))
    means = {label: float(group["accuracy"].mean()) for label, group in groups.items()}
    order = sorted(groups, key=lambda label: (-means[label], label))
    point = stats.rankdata([-means[label] for label in order], method="min").astype(int)
    rank = dict(zip(order, point.tolist(), strict=True))
    accuracy, method = _resampled_accuracy({k: groups[k] for k in order}, details,
                                           np.random.default_rng(seed))
    if accuracy is None:
        low, high = dict(rank), dict(rank)
    else:
        ranks = stats.rankdata(-accuracy, method="min", axis=0)  # (strategies, resamples)
        tail = 100 * (1 - CONFIDENCE) / 2
        lows = np.percentile(ranks, tail, axis=1, method="lower")
        highs = np.percentile(ranks, 100 - tail, axis=1, method="higher")
        low = {label: int(min(v, rank[label])) for label, v in zip(order, lows, strict=True)}
        high = {label: int(max(v, rank[label])) for label, v in zip(order, highs, strict=True)}
    tiers = _tiers(order, low, high)
    return pd.DataFrame(
        [{"task": task, "strategy": label, "rank": rank[label], "rank_low": low[label],
          "rank_high": high[label], "tier": tiers[label], "rank_method": method}
         for label in order], columns=RANK_COLUMNS)


def rank_intervals(frame: pd.DataFrame, details: dict[str, CellDetail]) -> pd.DataFrame:
    """RANK_COLUMNS for every (task, strategy label) with a successful seed.

    frame: per-record rows with a `label` column (results.labelled); details by cell_id.
    """
    ok = frame[(frame["status"] == "ok") & frame["accuracy"].notna()]
    tables = [task_ranks(str(task), rows, details) for task, rows in ok.groupby("task")]
    if not tables:
        return pd.DataFrame(columns=RANK_COLUMNS)
    return pd.concat(tables, ignore_index=True)


def order_stability(rows: pd.DataFrame) -> Stability:
    """Kendall's tau between each pair of seeds' accuracies over the strategies both ran
    (one task's successful per-seed rows with a `label` column)."""
    table = rows.pivot_table(index="label", columns="seed", values="accuracy", aggfunc="mean")
    taus, sizes = [], []
    for a, b in combinations(table.columns, 2):
        both = table[[a, b]].dropna()
        if len(both) < 3:
            continue
        tau = stats.kendalltau(both[a], both[b]).statistic
        if math.isfinite(tau):
            taus.append(float(tau))
            sizes.append(len(both))
    if not taus:
        return Stability(math.nan, 0, len(table))
    return Stability(float(np.mean(taus)), len(taus), max(sizes))


def stability_by_task(frame: pd.DataFrame) -> dict[str, Stability]:
    ok = frame[(frame["status"] == "ok") & frame["accuracy"].notna()]
    return {str(task): order_stability(rows) for task, rows in ok.groupby("task")}


def rank_text(row: pd.Series) -> str:
    """`2 (1–4)`; the point rank alone where there is no interval."""
    if "rank" not in row or pd.isna(row["rank"]):
        return "—"
    point, low, high = int(row["rank"]), row["rank_low"], row["rank_high"]
    if pd.isna(low) or (int(low) == point == int(high) and row["rank_method"] == NO_INTERVAL):
        return str(point)
    return f"{point} ({int(low)}–{int(high)})"
