"""Default against tuned: what the equal-budget search (matrix/search.py) gained for each
strategy, and what it cost.

A tuned record carries its search's `tuning` section; its default is the record of the same
task and strategy whose config hash the section names (the matrix runs the defaults first).
Where the search chose the default's own settings, the two are the same cells.
"""

from __future__ import annotations

import math

import pandas as pd

from peft_arena.report import markdown

COLUMNS = ["task", "kind", "strategy", "default_accuracy", "tuned_accuracy", "gain", "budget",
           "trials_s", "settings", "n_default", "n_tuned"]


def default_against_tuned(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model, strategy) with a tuned record: COLUMNS (accuracies are means
    over successful seeds on the test split)."""
    ok = frame[(frame["status"] == "ok") & frame["accuracy"].notna()]
    if "tune_budget" not in ok or ok["tune_budget"].isna().all():
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    tuned_rows = ok[ok["tune_budget"].notna()]
    for (task, model, strategy), tuned in tuned_rows.groupby(
            ["task", ok["model"].fillna(""), "strategy"], sort=True):
        default_hash = tuned["tune_default_hash"].dropna()
        same = ok[(ok["task"] == task) & (ok["model"].fillna("") == model)
                  & (ok["strategy"] == strategy)]
        default = same[same["config_hash"].isin(set(default_hash))]
        label = tuned["label"].iloc[0].removesuffix(" tuned") if "label" in tuned else strategy
        default_accuracy = default["accuracy"].mean() if len(default) else math.nan
        rows.append({
            "task": task, "strategy": label, "default_accuracy": default_accuracy,
            # Records made before generation tasks existed are classification.
            "kind": tuned["kind"].dropna().iloc[0] if tuned["kind"].notna().any()
            else "classification",
            "tuned_accuracy": tuned["accuracy"].mean(),
            "gain": tuned["accuracy"].mean() - default_accuracy,
            "budget": int(tuned["tune_budget"].iloc[0]),
            # One search per strategy: every seed's record carries the same total.
            "trials_s": float(tuned["tune_trials_s"].iloc[0]),
            "settings": tuned["tune_settings"].iloc[0],
            "n_default": len(default), "n_tuned": len(tuned),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def _accuracy(value: float) -> str:
    return markdown.DASH if not math.isfinite(value) else f"{value:.3f}"


def task_lines(task: str, table: pd.DataFrame) -> list[str]:
    """Markdown under a task's leaderboard: the default against the tuned settings."""
    mine = table[table["task"] == task].sort_values("tuned_accuracy", ascending=False)
    if mine.empty:
        return []
    budgets = sorted(set(mine["budget"]))
    headers = ["strategy", "kind", "default", "tuned", "gain (pts)", "search s",
               "chosen settings"]
    rows = [[row.strategy, row.kind, _accuracy(row.default_accuracy), _accuracy(row.tuned_accuracy),
             markdown.DASH if not math.isfinite(row.gain) else f"{100 * row.gain:+.1f}",
             f"{row.trials_s:.0f}", str(row.settings or markdown.DASH)]
            for row in mine.itertuples()]
    budget = " or ".join(str(b) for b in budgets)
    return [f"**Default against tuned** — every strategy searched with the same budget "
            f"({budget} trials on the validation split: the learning rate and the method's "
            f"main knob; the test split is scored only after the choice). search s = the "
            f"trials' total time.", "", *markdown.table(headers, rows), ""]
