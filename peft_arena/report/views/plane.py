"""The stability-plasticity plane: target accuracy against retention of the base model.

One panel per task: x = linear CKA between the base and the tuned model on general probe
texts (measure.retention; 1.0 = the base representation kept), y = test accuracy on the task;
one point per strategy, the mean over seeds with ± 1 sd error bars on both axes, and the
Pareto front of the two (no other strategy keeps more of the base *and* scores higher) marked
as in report.charts' trade-off charts. Up and right is better on both axes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from peft_arena.report.views.charts import (
    _save,
    _seed_note,
    front_legend,
    markers_by_label,
    pareto_mask,
)

PLANE_NAME = "accuracy_vs_retention"
PLANE_TITLE = "Accuracy vs retention (CKA to the base model)"


def plane_points(data: pd.DataFrame, hue: str) -> pd.DataFrame:
    """Mean and sd over seeds per (task, strategy), and which points are on the front."""
    points = (data.groupby(["task", hue])
              .agg(cka=("cka", "mean"), cka_sd=("cka", "std"),
                   accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"))
              .reset_index())
    points["pareto"] = False
    for _, rows in points.groupby("task"):
        # pareto_mask minimises its first argument: a higher CKA is a lower "cost".
        points.loc[rows.index, "pareto"] = pareto_mask(-rows["cka"], rows["accuracy"])
    return points


def write_plane(frame: pd.DataFrame, out_dir: Path, hue: str = "strategy") -> list[Path]:
    """Write charts/accuracy_vs_retention.png; [] when no successful record has a CKA."""
    data = frame[frame["status"] == "ok"] if "status" in frame else frame
    if "cka" not in data:
        return []
    labels = sorted(data[hue].astype(str).unique())  # the palette report.charts gives them
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    data = data.dropna(subset=["cka", "accuracy"])
    if data.empty:
        return []
    data = data.assign(**{hue: data[hue].astype(str)})
    points = plane_points(data, hue)
    markers = markers_by_label(data, hue)
    tasks = sorted(points["task"].astype(str).unique())
    fig = Figure(figsize=(1.0 + 4.6 * len(tasks), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tasks), squeeze=False)[0])
    for ax, task in zip(axes, tasks, strict=True):
        rows = points[points["task"] == task]
        front = rows[rows["pareto"]].sort_values("cka", ascending=False)
        # The front as a staircase, from the most retaining strategy to the most accurate.
        ax.step(front["cka"], front["accuracy"], where="post", color="black", linestyle="--",
                linewidth=1, zorder=1)
        for _, point in rows.iterrows():
            ax.errorbar(point["cka"], point["accuracy"],
                        xerr=point["cka_sd"] if math.isfinite(point["cka_sd"]) else None,
                        yerr=point["accuracy_sd"] if math.isfinite(point["accuracy_sd"])
                        else None,
                        fmt=markers.get(point[hue], "o"), color=palette[point[hue]],
                        markersize=7, capsize=3, zorder=3)
            if point["pareto"]:
                ax.plot(point["cka"], point["accuracy"], "o", markersize=13,
                        markeredgewidth=1.2, markerfacecolor="none", markeredgecolor="black",
                        zorder=2)
            ax.annotate(str(point[hue]), (point["cka"], point["accuracy"]), xytext=(7, 5),
                        textcoords="offset points", fontsize=8, color="#333333")
        low = min(rows["cka"].min(), 1.0)
        span = max(1.0 - low, 1e-3)
        ax.set_xlim(low - 0.15 * span, 1.0 + 0.1 * span)
        ax.axvline(1.0, color="#999999", linewidth=0.8, linestyle=":", zorder=0)
        ax.set_title(task, fontsize=11)
        ax.set_xlabel("retention: linear CKA to the base model (1 = unchanged)")
        ax.grid(alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("test accuracy (fraction correct)")
    front_legend(fig, points, hue, palette, markers)
    note = _seed_note(data, hue, "bars")
    fig.suptitle(f"{PLANE_TITLE} (up and right is better; {note})", fontsize=12)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_save(fig, out_dir / f"{PLANE_NAME}.png")]
