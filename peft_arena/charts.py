"""Grouped bar charts (x = task, hue = strategy), one PNG per metric.

Charts are drawn on `matplotlib.figure.Figure` objects rather than through pyplot's global
figure list, so nothing leaks between calls and no display is ever needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

# Set before anything imports pyplot (seaborn does): a headless server has no display.
matplotlib.use("Agg")

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 120
CHARTS_SUBDIR = "charts"
_MEMORY_SOURCES = {"cpu_rss": "CPU RSS of the cell's process", "nvml": "GPU memory via NVML"}


@dataclass(frozen=True)
class Chart:
    name: str  # file stem: charts/<name>.png
    column: str  # column of the per-record frame
    title: str
    ylabel: str
    log: bool = False
    spread: bool = True  # error bars over seeds; off where the value cannot vary by seed


CHARTS: tuple[Chart, ...] = (
    Chart("accuracy", "accuracy", "Test accuracy", "accuracy (fraction correct)"),
    Chart("macro_f1", "macro_f1", "Macro F1", "macro F1 (0–1)"),
    Chart(
        "trainable_params", "trainable", "Trainable parameters",
        "trainable parameters (count, log scale)", log=True, spread=False,
    ),
    Chart("train_time", "train_s", "Training time", "train time (s)"),
    Chart("peak_memory", "peak_mb", "Peak memory", "peak memory (MiB)"),
)


def chart_title(name: str) -> str:
    """The human title of a chart file stem (for image alt text)."""
    return next((c.title for c in CHARTS if c.name == name), name.replace("_", " "))


def write_charts(frame: pd.DataFrame, out_dir: Path, hue: str = "strategy") -> list[Path]:
    """Write one PNG per metric into out_dir; return the paths written.

    Only successful records are plotted: a failed cell has no value, and drawing it as a zero
    bar would read as "scored zero". A metric no record has is skipped.
    """
    data = frame[frame["status"] == "ok"] if "status" in frame else frame
    if data.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One palette for all charts, so a strategy has the same colour everywhere.
    labels = sorted(data[hue].astype(str).unique())
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    paths = []
    for chart in CHARTS:
        subset = data.dropna(subset=[chart.column])
        if not subset.empty:
            paths.append(_draw(chart, subset, hue, palette, out_dir / f"{chart.name}.png"))
    return paths


def _draw(
    chart: Chart, data: pd.DataFrame, hue: str, palette: dict[str, object], path: Path
) -> Path:
    data = data.assign(**{hue: data[hue].astype(str)})
    tasks = sorted(data["task"].astype(str).unique())
    hues = [label for label in palette if label in set(data[hue])]
    fig = Figure(figsize=(_width(len(tasks), len(hues)), 4.2))
    ax = fig.subplots()
    sns.barplot(
        data=data, x="task", y=chart.column, hue=hue, order=tasks, hue_order=hues,
        palette=palette, errorbar="sd" if chart.spread else None, capsize=0.15,
        err_kws={"linewidth": 1.2}, ax=ax,
    )
    if chart.log:
        # Set after drawing: seaborn's own log_scale leaves bars that start at 0 invisible.
        ax.set_yscale("log")
        ax.set_ylim(bottom=data[chart.column].min() / 4)  # the smallest bar stays visible
    _label(ax, chart, data, hue)
    # bbox_inches="tight" grows the saved area to include the outside legend and long labels.
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _label(ax: Axes, chart: Chart, data: pd.DataFrame, hue: str) -> None:
    seeds = data.groupby(["task", hue]).size().max()
    note = "mean, error bars ± 1 sd over seeds" if seeds > 1 else "single seed"
    note = note if chart.spread else "same for every seed"
    ylabel = chart.ylabel
    if chart.column == "peak_mb":
        ylabel = f"{ylabel}\n{_memory_note(data)}"
    ax.set_title(f"{chart.title} by task and strategy ({note})", fontsize=11)
    ax.set_xlabel("task")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20 if len(set(data["task"])) > 4 else 0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    # Outside the axes on the right: never covers a bar, however many strategies there are.
    sns.move_legend(
        ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="strategy", frameon=False
    )


def _memory_note(data: pd.DataFrame) -> str:
    sources: Sequence[str] = sorted(data.get("memory_source", pd.Series()).dropna().unique())
    return "; ".join(_MEMORY_SOURCES.get(s, s) for s in sources) or "source unknown"


def _width(n_tasks: int, n_hues: int) -> float:
    return min(18.0, max(6.0, 1.5 + 0.45 * n_tasks * n_hues))
