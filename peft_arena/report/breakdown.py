"""Per-task detail for the report: F1 per class, prediction confidence, time per phase.

Each function returns a markdown section for one task, or nothing when no record of the task
holds the data it needs (older records lack per-class F1 and confidence).
"""

from __future__ import annotations

import math

import pandas as pd

from peft_arena.report import markdown
from peft_arena.report.results import PHASES, CellDetail

MAX_CLASSES = 10  # beyond this many classes only the worst are listed


def per_class_f1(frame: pd.DataFrame, order: list[str],
                 details: dict[str, CellDetail]) -> pd.DataFrame:
    """Mean F1 over seeds: one row per class, one column per strategy label (in `order`).

    frame: the task's successful records, with a `label` column.
    """
    scores: dict[str, list[pd.Series]] = {}
    for cell_id, label in zip(frame["cell_id"], frame["label"], strict=True):
        detail = details.get(cell_id) if isinstance(cell_id, str) else None
        if detail is not None and detail.per_class_f1:
            scores.setdefault(label, []).append(pd.Series(detail.per_class_f1, dtype=float))
    columns = {label: pd.concat(series, axis=1).mean(axis=1) for label, series in scores.items()}
    table = pd.DataFrame({label: columns[label] for label in order if label in columns})
    if table.empty:
        return table
    # Hardest classes first: lowest F1 averaged over the strategies.
    return table.loc[table.mean(axis=1).sort_values(kind="stable").index]


def per_class_section(frame: pd.DataFrame, order: list[str],
                      details: dict[str, CellDetail]) -> list[str]:
    table = per_class_f1(frame, order, details)
    if table.empty:
        return []
    n_classes = len(table)
    shown = table.head(MAX_CLASSES)
    scope = (f"the {MAX_CLASSES} lowest of {n_classes} classes" if n_classes > MAX_CLASSES
             else f"{n_classes} classes")
    rows = [[str(name), *(markdown.number(v, "{:.3f}".format) for v in values)]
            for name, values in shown.iterrows()]
    return [f"F1 per class on the test split ({scope}, lowest mean F1 first; mean over seeds):",
            "", *markdown.table(["class", *shown.columns], rows), ""]


def confidence_section(summary: pd.DataFrame) -> list[str]:
    """summary: the task's summary rows in display order."""
    columns = ["confidence_mean", "confident_share_mean", "ece_mean"]
    shown = summary[summary[columns].notna().any(axis=1)]
    if shown.empty:
        return []
    rows = [[row["strategy"], markdown.number(row["confidence_mean"], "{:.3f}".format),
             markdown.number(row["confident_share_mean"], "{:.1%}".format),
             markdown.number(row["ece_mean"], "{:.3f}".format)] for _, row in shown.iterrows()]
    headers = ["strategy", "mean confidence", "share > 0.9", "ECE"]
    return ["Prediction confidence on the test split (the top softmax probability; ECE = "
            "expected calibration error over 10 equal-width bins, 0 = perfectly calibrated; "
            "means over seeds):", "", *markdown.table(headers, rows), ""]


def phase_section(summary: pd.DataFrame) -> list[str]:
    """Mean wall-clock seconds per phase of a cell, for the phases any row recorded."""
    keys = {phase: f"{phase}_mean" for phase in (*PHASES, "total_s")}
    present = [phase for phase, key in keys.items() if summary[key].notna().any()]
    if not present or present == ["total_s"]:
        return []
    rows = [[row["strategy"], *(markdown.number(row[keys[p]], "{:,.1f}".format) for p in present)]
            for _, row in summary.iterrows() if row["n_seeds"] > 0]
    headers = ["strategy", *(p.removesuffix("_s") for p in present)]
    return ["Time per phase (mean wall-clock seconds over seeds):",
            "", *markdown.table(headers, rows), ""]


def rank_section(frame: pd.DataFrame, details: dict[str, CellDetail]) -> list[str]:
    """AdaLoRA's final rank per adapted module (mean over seeds) beside the rank every module
    started with: where training moved the rank budget.

    frame: the task's successful records, with a `label` column.
    """
    ranks: dict[str, list[dict[str, int]]] = {}
    initial: dict[str, int | None] = {}
    for cell_id, label in zip(frame["cell_id"], frame["label"], strict=True):
        detail = details.get(cell_id) if isinstance(cell_id, str) else None
        if detail is not None and detail.rank_pattern:
            ranks.setdefault(label, []).append(detail.rank_pattern)
            initial[label] = detail.initial_rank
    if not ranks:
        return []
    labels = sorted(ranks)
    means = {label: pd.DataFrame(patterns).mean() for label, patterns in ranks.items()}
    modules = list(dict.fromkeys(m for label in labels for m in ranks[label][0]))
    one_place, whole = "{:.1f}".format, "{:.0f}".format
    prefix = _common_prefix(modules)
    rows = [[module.removeprefix(prefix),
             *(markdown.number(means[label].get(module, math.nan), one_place) for label in labels)]
            for module in modules]
    rows.append(["total", *(markdown.number(means[label].sum(), whole) for label in labels)])
    started = ", ".join(
        f"{label} {initial[label] if initial[label] is not None else markdown.DASH}"
        for label in labels)
    return [f"Final rank per adapted module (mean over seeds; every module started at rank "
            f"{started}): a rank budget moved between modules shows as unequal ranks.", "",
            *markdown.table(["module", *labels], rows), ""]


def _common_prefix(names: list[str]) -> str:
    """The dotted prefix all names share ('bert.encoder.layer.'), so the table shows the rest."""
    if len(names) < 2:
        return ""
    parts = [name.split(".") for name in names]
    shared = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) > 1:
            break
        shared.append(pieces[0])
    return ".".join(shared) + "." if shared else ""


def task_section(task: str, frame: pd.DataFrame, summary: pd.DataFrame,
                 details: dict[str, CellDetail]) -> list[str]:
    """All detail of one task, or [] when there is none.

    frame: per-record rows with a `label` column; summary: the task's rows in display order.
    """
    ok = frame[(frame["task"] == task) & (frame["status"] == "ok")]
    order = [s for s, n in zip(summary["strategy"], summary["n_seeds"], strict=True) if n > 0]
    parts = [*per_class_section(ok, order, details), *confidence_section(summary),
             *rank_section(ok, details), *phase_section(summary)]
    return [f"### {markdown.escape(task)}", "", *parts] if parts else []
