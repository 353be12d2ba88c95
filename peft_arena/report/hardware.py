"""Records from several machines in one results folder: times, memory and MFU are shown per
hardware, never averaged across it (accuracy pools seeds from anywhere).

A task's main table takes its costs from one hardware (results.cost_hardware: the one with
the most records); this section lists what the task's other hardware measured, each beside
its own kind only.
"""

from __future__ import annotations

import math

import pandas as pd

from peft_arena.report.results import COST_METRICS, SUMMARY_METRICS, cost_hardware

NOTE = ("Times, memory and MFU are compared only within one kind of hardware (CPU or GPU "
        "model and features such as AMX, cores and threads, devices, precision); accuracy "
        "pools seeds from any machine.")
_COLUMNS = (("train s", "train_s", "{:,.1f}"), ("samples/s", "train_samples_per_s", "{:,.1f}"),
            ("peak MiB", "peak_mb", "{:,.0f}"), ("MFU", "mfu", "{:.1%}"))


def _value(rows: pd.DataFrame, column: str, fmt: str) -> str:
    values = rows[column].astype(float).dropna()
    return fmt.format(values.mean()) if len(values) else "—"


def task_hardware_lines(task: str, frame: pd.DataFrame) -> list[str]:
    """Markdown for one task: nothing when its records share one hardware; else which
    hardware the main table's costs come from, and a table of the others' costs.

    frame: per-record rows with a `label` column (results.labelled)."""
    rows = frame[(frame["task"] == task) & (frame["status"] == "ok")]
    kinds = sorted(rows["hardware"].dropna().unique())
    if len(kinds) < 2:
        return []
    reference = cost_hardware(frame).get(task)
    others = [k for k in kinds if k != reference]
    lines = [f"Costs above (time, memory, MFU) were measured on **{reference}**; "
             f"{len(others)} other kind(s) of hardware also ran this task. Their costs, each "
             "within its own hardware (accuracy above pools all of them):", "",
             "| hardware | strategy | kind | seeds | " + " | ".join(c[0] for c in _COLUMNS)
             + " |", "|" + "---|" * (4 + len(_COLUMNS))]
    for kind in others:
        on_kind = rows[rows["hardware"] == kind]
        for label, group in on_kind.groupby("label", sort=True):
            cells = [_value(group, column, fmt) for _, column, fmt in _COLUMNS]
            lines.append(f"| {kind} | {label} | {_task_kind(group)} | {len(group)} | "
                         + " | ".join(cells) + " |")
    return [*lines, ""]


def _task_kind(rows: pd.DataFrame) -> str:
    # Records made before generation tasks existed are classification.
    kinds = rows["kind"].dropna() if "kind" in rows else pd.Series(dtype=object)
    return str(kinds.iloc[0]) if len(kinds) else "classification"


def is_mixed(frame: pd.DataFrame) -> bool:
    return frame.loc[frame["status"] == "ok", "hardware"].nunique() > 1


def costs_on_reference(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the costs of records not on their task's chosen hardware blanked, for
    charts that draw all strategies of a task side by side."""
    reference = frame["task"].map(cost_hardware(frame))
    other = frame["hardware"].notna() & reference.notna() & (frame["hardware"] != reference)
    columns = sorted({SUMMARY_METRICS[name] for name in COST_METRICS} | {"peak_mb"})
    blanked = frame.copy()
    blanked.loc[other, columns] = math.nan
    return blanked
