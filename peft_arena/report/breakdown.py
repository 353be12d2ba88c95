"""Per-task detail for the report: F1 per class, prediction confidence, time per phase, data
hygiene (duplicates, test rows leaking into train, dropped rows), and the leak warning.

Each function returns a markdown section for one task, or nothing when no record of the task
holds the data it needs (older records lack per-class F1 and confidence).
"""

from __future__ import annotations

import json
import math
from typing import Any

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
    share = "retention_share_max" in summary and summary["retention_share_max"].notna().any()
    rows = [[row["strategy"], *(markdown.number(row[keys[p]], "{:,.1f}".format) for p in present),
             *([markdown.number(row["retention_share_max"], "{:.1%}".format)] if share else [])]
            for _, row in summary.iterrows() if row["n_seeds"] > 0]
    headers = ["strategy", *(p.removesuffix("_s") for p in present),
               *(["retention share"] if share else [])]
    note = (" Retention share: the retention phase's part of the cell's total time, the "
            "largest over seeds; it holds the base model's side only where the cell computed "
            "that itself (`retention.base_cache_hit` false), not where the matrix did before "
            "the cells." if share else "")
    return [f"Time per phase (mean wall-clock seconds over seeds).{note}",
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
def _hygiene_groups(frame: pd.DataFrame, details: dict[str, CellDetail], part: str
                   ) -> list[tuple[list[str], dict[str, Any]]]:
    """Distinct `part` ("full" or "used") sections of the records, with the strategy labels
    of the cells that recorded each (cells of other sizes use other rows)."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for cell_id, label in zip(frame["cell_id"], frame["label"], strict=True):
        detail = details.get(cell_id) if isinstance(cell_id, str) else None
        section = (detail.data_hygiene or {}).get(part) if detail else None
        if isinstance(section, dict):
            labels, _ = groups.setdefault(json.dumps(section, sort_keys=True), ([], section))
            if label not in labels:
                labels.append(label)
    return list(groups.values())


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else markdown.DASH


def _dropped_text(dropped: Any) -> str:
    if not isinstance(dropped, dict) or not dropped:
        return "0" if isinstance(dropped, dict) else markdown.DASH
    reasons = ", ".join(f"{reason} {count}" for reason, count in dropped.items())
    return f"{sum(v for v in dropped.values() if isinstance(v, int)):,} ({reasons})"


def _hygiene_rows(which: str, section: dict[str, Any], dropped: dict[str, Any] | None
                  ) -> list[list[str]]:
    rows = []
    for split, counts in section.items():
        counts = counts if isinstance(counts, dict) else {}
        leaked = _count(counts.get("in_train")) if split != "train" else markdown.DASH
        removed = _dropped_text(dropped.get(split)) if dropped else markdown.DASH
        rows.append([which, split, _count(counts.get("rows")), _count(counts.get("duplicates")),
                     leaked, removed])
    return rows


def _hygiene_sections(frame: pd.DataFrame, details: dict[str, CellDetail]) -> list[dict[str, Any]]:
    found = []
    for cell_id in frame["cell_id"]:
        detail = details.get(cell_id) if isinstance(cell_id, str) else None
        if detail is not None and isinstance(detail.data_hygiene, dict):
            found.append(detail.data_hygiene)
    return found


def leak_note(frame: pd.DataFrame, details: dict[str, CellDetail]) -> list[str]:
    """A warning under a task's table when its cells were tested on a split that keeps rows
    whose text is also in the training file. frame: the task's successful records."""
    for section in _hygiene_sections(frame, details):
        if section.get("test_leaks_into_train") is True:
            test = (section.get("full") or {}).get("test") or {}
            leaked, rows = test.get("in_train"), test.get("rows")
            share = f" ({leaked / rows:.2%})" if isinstance(leaked, int) and rows else ""
            return [f"⚠ **Test split leaks into train**: {_count(leaked)} of {_count(rows)} test "
                    f"rows{share} have the text of a training row and stayed in the test split "
                    f"(`drop_test_leaks: true` in the task file, or `--set "
                    f"drop_test_leaks=true`, drops them); Details show the rows each cell used.",
                    ""]
    return []


def hygiene_section(frame: pd.DataFrame, details: dict[str, CellDetail]) -> list[str]:
    """Rows, duplicates, test and validation rows whose text is in train, and rows dropped:
    for the task's full splits and for the rows its cells used. frame: successful records."""
    full = _hygiene_groups(frame, details, "full")
    if not full:
        return []
    used = _hygiene_groups(frame, details, "used")
    dropped = next((s.get("dropped") for s in _hygiene_sections(frame, details)
                    if isinstance(s.get("dropped"), dict)), None)
    rows = []
    for which, groups, drops in (("full", full, dropped), ("used", used, None)):
        for labels, section in groups:
            name = which if len(groups) == 1 else f"{which} ({', '.join(labels)})"
            rows += _hygiene_rows(name, section, drops)
    headers = ["data", "split", "rows", "duplicates", "text also in train", "dropped"]
    return ["Data hygiene (texts compared exactly after collapsing whitespace; full = the "
            "task's files, used = the rows the cells trained, validated and tested on):", "",
            *markdown.table(headers, rows), ""]


def task_section(task: str, frame: pd.DataFrame, summary: pd.DataFrame,
                 details: dict[str, CellDetail]) -> list[str]:
    """All detail of one task, or [] when there is none.

    frame: per-record rows with a `label` column; summary: the task's rows in display order.
    """
    ok = frame[(frame["task"] == task) & (frame["status"] == "ok")]
    order = [s for s, n in zip(summary["strategy"], summary["n_seeds"], strict=True) if n > 0]
    parts = [*per_class_section(ok, order, details), *confidence_section(summary),
             *rank_section(ok, details), *phase_section(summary), *hygiene_section(ok, details)]
    kinds = frame.loc[frame["task"] == task, "kind"].dropna() if "kind" in frame else []
    kind = str(kinds.iloc[0]) if len(kinds) else "classification"
    return [f"### {markdown.escape(task)} ({kind})", "", *parts] if parts else []
