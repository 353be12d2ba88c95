"""Charts of a results folder, one PNG each:

- bars: one metric per chart, x = task, hue = strategy, error bars over seeds;
- trade-offs: accuracy against trainable parameters, peak memory and training time (log x),
  one panel per task, one point per strategy, the Pareto front marked;
- curves: training loss, validation loss and validation accuracy per epoch, one chart per task;
- confusion matrices (on request): one per task and strategy, from the stored test predictions.

Charts are drawn on `matplotlib.figure.Figure` objects rather than through pyplot's global
figure list, so nothing leaks between calls and no display is ever needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

# Set before anything imports pyplot (seaborn does): a headless server has no display.
matplotlib.use("Agg")

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter
from sklearn.metrics import confusion_matrix

from peft_arena.report.results import CellDetail

DPI = 120
CHARTS_SUBDIR = "charts"
CONFUSION_SUBDIR = "confusion"
_MEMORY_SOURCES = {"cpu_rss": "CPU RSS of the cell's process", "nvml": "GPU memory via NVML"}
Palette = dict[str, object]


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


@dataclass(frozen=True)
class Tradeoff:
    name: str
    column: str  # the cost on the x axis (lower is better)
    title: str
    xlabel: str


TRADEOFFS: tuple[Tradeoff, ...] = (
    Tradeoff("accuracy_vs_params", "trainable", "Accuracy vs trainable parameters",
             "trainable parameters (count, log scale)"),
    Tradeoff("accuracy_vs_memory", "peak_mb", "Accuracy vs peak memory",
             "peak memory (MiB, log scale)"),
    Tradeoff("accuracy_vs_time", "train_s", "Accuracy vs training time",
             "train time (s, log scale)"),
)
# A point's shape names its model when a folder holds several (its colour, the strategy).
MODEL_MARKERS = ("o", "s", "^", "D", "v", "P")
# report/views/kinds.py: a task's head against its `-gen` twin's generated label.
HEAD_VS_GENERATION = "head_vs_generation"
CURVE_PANELS = (("train_loss", "training loss"), ("val_loss", "validation loss"),
                ("val_accuracy", "validation accuracy"))


def chart_title(name: str) -> str:
    """The human title of a chart file stem (for image alt text)."""
    for chart in (*CHARTS, *TRADEOFFS):
        if chart.name == name:
            return chart.title
    if name == HEAD_VS_GENERATION:
        return "Head against generated label"
    if name.startswith("curves_"):
        return f"Training curves: {name.removeprefix('curves_')}"
    if "__" in name:
        task, strategy = name.split("__", 1)
        return f"Confusion matrix: {task}, {strategy}"
    return name.replace("_", " ")


def write_charts(frame: pd.DataFrame, out_dir: Path, hue: str = "strategy",
                 details: dict[str, CellDetail] | None = None,
                 confusion: bool = False) -> list[Path]:
    """Write the charts into out_dir (confusion matrices into out_dir/confusion); return the
    paths written.

    Only successful records are plotted: a failed cell has no value, and drawing it as a zero
    would read as "scored zero". A chart no record has data for is skipped.
    """
    data = frame[frame["status"] == "ok"] if "status" in frame else frame
    if data.empty:
        return []
    data = data.assign(**{hue: data[hue].astype(str)})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One palette for all charts, so a strategy has the same colour everywhere.
    labels = sorted(data[hue].unique())
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    paths = []
    for chart in CHARTS:
        subset = data.dropna(subset=[chart.column])
        if not subset.empty:
            paths.append(_draw_bars(chart, subset, hue, palette, out_dir / f"{chart.name}.png"))
    for tradeoff in TRADEOFFS:
        subset = data.dropna(subset=["accuracy", tradeoff.column])
        subset = subset[subset[tradeoff.column] > 0]  # a log axis has no place for 0
        if not subset.empty:
            paths.append(_draw_tradeoff(tradeoff, subset, hue, palette,
                                        out_dir / f"{tradeoff.name}.png"))
    details = details or {}
    for task, rows in data.groupby("task", sort=True):
        curves = _curve_frame(rows, hue, details)
        if not curves.empty:
            paths.append(_draw_curves(str(task), curves, hue, palette,
                                      out_dir / f"curves_{task}.png"))
    if confusion:
        paths += write_confusions(data, out_dir / CONFUSION_SUBDIR, hue, details)
    return paths


def _save(fig: Figure, path: Path) -> Path:
    # bbox_inches="tight" grows the saved area to include outside legends and long labels.
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _seed_note(data: pd.DataFrame, hue: str, spread: str) -> str:
    seeds = data.groupby(["task", hue]).size().max()
    return f"mean, {spread} ± 1 sd over seeds" if seeds > 1 else "single seed"


def _outside_legend(ax: Axes) -> None:
    # Outside the axes on the right: never covers a bar or point, however many strategies.
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="strategy",
                    frameon=False)


# --- bars -------------------------------------------------------------------------------------


def _draw_bars(chart: Chart, data: pd.DataFrame, hue: str, palette: Palette, path: Path) -> Path:
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
    note = _seed_note(data, hue, "error bars") if chart.spread else "same for every seed"
    ylabel = chart.ylabel
    if chart.column == "peak_mb":
        ylabel = f"{ylabel}\n{_memory_note(data)}"
    ax.set_title(f"{chart.title} by task and strategy ({note})", fontsize=11)
    ax.set_xlabel("task")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20 if len(tasks) > 4 else 0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _outside_legend(ax)
    return _save(fig, path)


def _memory_note(data: pd.DataFrame) -> str:
    sources: Sequence[str] = sorted(data.get("memory_source", pd.Series()).dropna().unique())
    return "; ".join(_MEMORY_SOURCES.get(s, s) for s in sources) or "source unknown"


def _width(n_tasks: int, n_hues: int) -> float:
    return min(18.0, max(6.0, 1.5 + 0.45 * n_tasks * n_hues))


# --- trade-offs -------------------------------------------------------------------------------


def pareto_mask(costs: Sequence[float], scores: Sequence[float]) -> list[bool]:
    """True for each point no other point beats: none costs as little or less and scores as
    high or higher, with one of the two strictly better."""
    points = list(zip(costs, scores, strict=True))
    return [
        not any(c <= cost and s >= score and (c < cost or s > score) for c, s in points)
        for cost, score in points
    ]


def _points(data: pd.DataFrame, hue: str, column: str) -> pd.DataFrame:
    """Mean and sd over seeds per (task, strategy), and which points are on the front."""
    points = (data.groupby(["task", hue])
              .agg(cost=(column, "mean"), accuracy=("accuracy", "mean"),
                   accuracy_sd=("accuracy", "std"), cost_sd=(column, "std"))
              .reset_index())
    points["pareto"] = False
    for _, rows in points.groupby("task"):
        points.loc[rows.index, "pareto"] = pareto_mask(rows["cost"], rows["accuracy"])
    return points


def markers_by_label(data: pd.DataFrame, hue: str) -> dict[str, str]:
    """label -> marker: one shape per model where the data holds several models (an encoder
    fully tuned beside a decoder with an adapter reads at a glance), circles otherwise."""
    labels = data[hue].astype(str)
    if "model" not in data or data["model"].nunique() <= 1:
        return dict.fromkeys(labels.unique(), "o")
    models = sorted(data["model"].astype(str).unique())
    shape = {model: MODEL_MARKERS[i % len(MODEL_MARKERS)] for i, model in enumerate(models)}
    return {str(label): shape[str(model)]
            for label, model in data["model"].groupby(labels).first().items()}


def _draw_tradeoff(tradeoff: Tradeoff, data: pd.DataFrame, hue: str, palette: Palette,
                   path: Path) -> Path:
    points = _points(data, hue, tradeoff.column)
    markers = markers_by_label(data, hue)
    tasks = sorted(points["task"].astype(str).unique())
    fig = Figure(figsize=(1.0 + 4.6 * len(tasks), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tasks), squeeze=False)[0])
    xlabel = tradeoff.xlabel
    if tradeoff.column == "peak_mb":
        xlabel = f"{xlabel}\n{_memory_note(data)}"
    for ax, task in zip(axes, tasks, strict=True):
        _tradeoff_panel(ax, points[points["task"] == task], hue, palette, markers)
        ax.set_title(task, fontsize=11)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("test accuracy (fraction correct)")
    front_legend(fig, points, hue, palette, markers)
    note = _seed_note(data, hue, "bars")
    fig.suptitle(f"{tradeoff.title} (up and left is better; {note})", fontsize=12)
    return _save(fig, path)


def front_legend(fig: Figure, points: pd.DataFrame, hue: str, palette: Palette,
                 markers: dict[str, str] | None = None) -> None:
    """One marker per strategy drawn (in its model's shape), and the Pareto front's ring,
    right of the panels."""
    markers = markers or {}
    handles = [matplotlib.lines.Line2D([], [], marker=markers.get(label, "o"), linestyle="",
                                       color=palette[label], label=label)
               for label in palette if label in set(points[hue])]
    handles.append(matplotlib.lines.Line2D([], [], color="black", linestyle="--", marker="o",
                                           markerfacecolor="none", markersize=11,
                                           label="Pareto front"))
    # Centred on the right: at the top it would run into the title of a one-panel figure.
    fig.legend(handles=handles, loc="outside right center", title="strategy", frameon=False)


def _label_clusters(points: pd.DataFrame, hue: str) -> list[tuple[list[str], float, float]]:
    """One label per group of points that would sit on each other (same cost within 5% and
    accuracy within 2% of the panel's range, as LoRA and QLoRA often do), naming them all."""
    span = (points["accuracy"].max() - points["accuracy"].min()) or 1.0
    clusters: list[tuple[list[str], float, float]] = []
    for _, point in points.sort_values("accuracy", ascending=False).iterrows():
        for names, cost, accuracy in clusters:
            if (abs(math.log10(point["cost"] / cost)) < 0.02
                    and abs(point["accuracy"] - accuracy) < 0.02 * span):
                names.append(str(point[hue]))
                break
        else:
            clusters.append(([str(point[hue])], point["cost"], point["accuracy"]))
    return clusters


def _tradeoff_panel(ax: Axes, points: pd.DataFrame, hue: str, palette: Palette,
                    markers: dict[str, str]) -> None:
    front = points[points["pareto"]].sort_values("cost")
    # The front as a staircase: each step is the best accuracy available at that cost.
    ax.step(front["cost"], front["accuracy"], where="post", color="black", linestyle="--",
            linewidth=1, zorder=1)
    for _, point in points.iterrows():
        colour = palette[point[hue]]
        ax.errorbar(point["cost"], point["accuracy"],
                    yerr=point["accuracy_sd"] if math.isfinite(point["accuracy_sd"]) else None,
                    fmt=markers.get(point[hue], "o"), color=colour, markersize=7, capsize=3,
                    zorder=3)
        if point["pareto"]:
            ax.plot(point["cost"], point["accuracy"], "o", markersize=13, markeredgewidth=1.2,
                    markerfacecolor="none", markeredgecolor="black", zorder=2)
    for names, cost, accuracy in _label_clusters(points, hue):
        ax.annotate(", ".join(names), (cost, accuracy), xytext=(7, 5),
                    textcoords="offset points", fontsize=8, color="#333333")
    ax.set_xscale("log")
    low, high = _pad_log_axis(ax, points["cost"])
    # Tick labels written out ("200", "1K", "20M"): matplotlib's own "2×10³" run into each
    # other. As many ticks per decade as fit: wide axes get one, narrow ones several.
    decades = math.log10(high / low)
    subs = next(subs for min_decades, subs in _TICKS_PER_DECADE if decades > min_decades)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _compact(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)


# (decades the axis must span, tick positions within each decade), widest first.
_TICKS_PER_DECADE = ((2.5, (1.0,)), (0.9, (1.0, 2.0, 5.0)), (0.0, (1.0, 2.0, 3.0, 5.0, 7.0)))


def _compact(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def _pad_log_axis(ax: Axes, values: pd.Series) -> tuple[float, float]:
    """Set and return x limits with room on both sides, so markers stay inside the panel,
    and more on the right, where the labels of the costliest points go."""
    low, high = float(values.min()), float(values.max())
    pad = max(1.3, (high / low) ** 0.08)
    limits = (low / pad, high * pad * 1.5)
    ax.set_xlim(*limits)
    return limits


# --- training curves --------------------------------------------------------------------------


def _curve_frame(rows: pd.DataFrame, hue: str, details: dict[str, CellDetail]) -> pd.DataFrame:
    """Long frame of history entries: one row per (record, evaluation)."""
    if "cell_id" not in rows:
        return pd.DataFrame()
    entries = []
    for cell_id, label in zip(rows["cell_id"], rows[hue], strict=True):
        detail = details.get(cell_id) if isinstance(cell_id, str) else None
        for entry in detail.history if detail else []:
            entries.append({**entry, hue: label, "cell": cell_id})
    frame = pd.DataFrame(entries)
    wanted = [name for name, _ in CURVE_PANELS if name in frame]
    if frame.empty or not wanted or frame[wanted].isna().all().all():
        return pd.DataFrame()
    return frame


def _curve_axis(curves: pd.DataFrame) -> tuple[str, str]:
    # Epochs read best; a run validated every N steps has several entries per epoch, so its
    # curve goes by optimizer step instead.
    if "epoch" in curves and curves["epoch"].notna().all():
        per_cell = curves.groupby("cell")["epoch"]
        if (per_cell.nunique() == per_cell.size()).all():
            return "epoch", "epoch"
    return "step", "optimizer step"


def _draw_curves(task: str, curves: pd.DataFrame, hue: str, palette: Palette,
                 path: Path) -> Path:
    x, xlabel = _curve_axis(curves)
    panels = [(name, label) for name, label in CURVE_PANELS
              if name in curves and curves[name].notna().any()]
    fig = Figure(figsize=(1.5 + 4.2 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    hues = [label for label in palette if label in set(curves[hue])]
    for ax, (column, label) in zip(axes, panels, strict=True):
        sns.lineplot(data=curves, x=x, y=column, hue=hue, hue_order=hues, palette=palette,
                     errorbar="sd", marker="o", ax=ax, legend=ax is axes[-1])
        ax.set_title(label, fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if column == "val_accuracy":
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        if x == "epoch":
            ax.xaxis.get_major_locator().set_params(integer=True)
    _outside_legend(axes[-1])
    seeds = curves.groupby(hue)["cell"].nunique().max() > 1
    note = "mean, band ± 1 sd over seeds" if seeds else "single seed"
    fig.suptitle(f"Training curves: {task} ({note})", fontsize=12)
    return _save(fig, path)


# --- confusion matrices -----------------------------------------------------------------------


def write_confusions(data: pd.DataFrame, out_dir: Path, hue: str,
                     details: dict[str, CellDetail]) -> list[Path]:
    """One confusion matrix per (task, strategy) with stored test predictions, seeds summed:
    out_dir/<task>__<strategy>.png."""
    data = data[data["status"] == "ok"] if "status" in data else data
    paths = []
    for (task, label), rows in data.groupby(["task", hue], sort=True):
        cells = [details[c] for c in rows["cell_id"]
                 if isinstance(c, str) and c in details and details[c].y_true is not None]
        if cells:
            out_dir.mkdir(parents=True, exist_ok=True)
            paths.append(_draw_confusion(str(task), str(label), cells,
                                         out_dir / f"{task}__{label}.png"))
    return paths


def _class_names(cells: list[CellDetail]) -> list[str]:
    names = next((c.label_names for c in cells if c.label_names), None)
    n_classes = 1 + max(int(max(c.y_true.max(), c.y_pred.max())) for c in cells)
    if names is None or len(names) < n_classes:
        return [str(i) for i in range(n_classes)]
    return list(names)


def _draw_confusion(task: str, label: str, cells: list[CellDetail], path: Path) -> Path:
    names = _class_names(cells)
    ids = list(range(len(names)))
    # Counts add up over seeds; each row is then shown as shares of that true class.
    counts = sum(confusion_matrix(c.y_true, c.y_pred, labels=ids) for c in cells)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    many = len(names) > 12
    side = min(16.0, max(4.5, 2.5 + 0.17 * len(names))) if many else 2.8 + 0.6 * len(names)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(shares, vmin=0, vmax=1, cmap="Blues", square=True, ax=ax,
                annot=not many, fmt=".2f", xticklabels=names, yticklabels=names,
                cbar_kws={"label": "share of the true class", "shrink": 0.7})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fontsize = 6 if many else 9
    ax.tick_params(axis="both", labelsize=fontsize)
    ax.tick_params(axis="x", rotation=90 if many else 30)
    ax.tick_params(axis="y", rotation=0)
    seeds = f", {len(cells)} seeds summed" if len(cells) > 1 else ""
    ax.set_title(f"Confusion matrix: {task}, {label} (test split{seeds})", fontsize=11)
    return _save(fig, path)
