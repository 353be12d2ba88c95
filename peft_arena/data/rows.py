"""Row checks: which rows of a split can be used (a text, and a label that names one of the
task's classes), the labels as ids, and a one-line error naming the file, the count and the
first rows when a task does not drop bad rows."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from peft_arena.common.errors import UserError
from peft_arena.config.tasks import TaskSpec
from peft_arena.data.splits import Split


@dataclass
class RawSplit:
    """One split as read, before any check."""

    frame: pd.DataFrame
    where: str  # the file, or the Hub data set and split: what an error names
    typed: bool  # False for CSV, whose numbers arrive as text


# Why a row cannot be used, in the order a row is checked (a row counts under its first).
BAD_ROW_REASONS = {
    "empty_text": "empty or whitespace-only text",
    "missing_label": "no label",
    "float_label": "a float label where integer ids are expected",
    "label_out_of_range": "a label id outside the label names",
    "unknown_label": "a label that is not among the task's label names",
}
ROWS_SHOWN = 5  # row numbers an error lists per reason
_INTEGER = re.compile(r"[+-]?\d+")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float):  # numpy floats too
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _number(value: Any, typed: bool) -> int | float | None:
    """A label as a number (an int id, or a float: a bad row), or None for a label name."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if not typed and isinstance(value, str):
        # CSV has no types: read numbers the way pandas would have inferred the column.
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _parse_labels(values: list[Any], typed: bool) -> tuple[list[bool], list[Any] | None]:
    """(missing per row, the labels as numbers, or None when the split's labels are names).

    A split's labels are ids when every present label is a number, names otherwise.
    """
    missing = [_is_missing(v) for v in values]
    numbers = [None if gone else _number(v, typed) for v, gone in zip(values, missing,
                                                                     strict=True)]
    present = [n for n, gone in zip(numbers, missing, strict=True) if not gone]
    is_ids = bool(present) and all(n is not None for n in present)
    return missing, numbers if is_ids else None


def _label_ids(values: list[Any], typed: bool, names: list[str]
               ) -> tuple[np.ndarray, list[str | None]]:
    """(label id per row, -1 where unusable; the reason a row is unusable, or None)."""
    missing, numbers = _parse_labels(values, typed)
    index = {name: i for i, name in enumerate(names)}
    ids = np.full(len(values), -1, dtype=np.int64)
    reasons: list[str | None] = [None] * len(values)
    for i, value in enumerate(values):
        if missing[i]:
            reasons[i] = "missing_label"
        elif numbers is not None:
            number = numbers[i]
            if isinstance(number, float):
                reasons[i] = "float_label"
            elif 0 <= number < len(names):
                ids[i] = number
            else:
                reasons[i] = "label_out_of_range"
        elif (found := index.get(str(value))) is not None:
            ids[i] = found
        else:
            reasons[i] = "unknown_label"
    return ids, reasons


def _bad_rows_message(raw: RawSplit, column: str, reasons: list[str | None],
                      n_labels: int) -> str:
    rows: dict[str, list[int]] = {reason: [] for reason in BAD_ROW_REASONS}
    for i, reason in enumerate(reasons):
        if reason is not None:
            rows[reason].append(i)
    parts = []
    for reason, found in rows.items():
        if not found:
            continue
        what = BAD_ROW_REASONS[reason]
        if reason == "label_out_of_range":
            what = f"a label id outside 0..{n_labels - 1}"
        if reason != "empty_text" and reason != "missing_label":
            what += f", e.g. {raw.frame[column].iloc[found[0]]!r}"
        numbers = ", ".join(str(i + 1) for i in found[:ROWS_SHOWN])
        more = ", ..." if len(found) > ROWS_SHOWN else ""
        parts.append(f"{what} in {_rows(len(found))} ({numbers}{more})")
    total = sum(map(len, rows.values()))
    return (f"{raw.where}: {_rows(total)} cannot be used: {'; '.join(parts)}. Fix them, or "
            f"drop them with `on_bad_rows: drop` in the task file (or --set on_bad_rows=drop).")


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def checked_split(raw: RawSplit, task: TaskSpec, names: list[str], on_bad_rows: str
                   ) -> tuple[Split, dict[str, int]]:
    """The split's usable rows, and how many rows were dropped for each reason."""
    frame = raw.frame
    for column in (task.text_column, task.label_column):
        if column not in frame.columns:
            raise UserError(
                f"{raw.where}: no column {column!r} (found: "
                f"{', '.join(map(str, frame.columns))}); set text_column/label_column in the "
                f"task file."
            )
    texts = frame[task.text_column].tolist()
    ids, reasons = _label_ids(frame[task.label_column].tolist(), raw.typed, names)
    for i, text in enumerate(texts):
        if _is_missing(text):
            reasons[i] = "empty_text"  # checked first: it outranks a label problem
    bad = [reason for reason in reasons if reason is not None]
    if not bad:
        return Split([str(t) for t in texts], ids), {}
    if on_bad_rows != "drop":
        raise UserError(_bad_rows_message(raw, task.label_column, reasons, len(names)))
    keep = [i for i, reason in enumerate(reasons) if reason is None]
    if not keep:
        raise UserError(f"{raw.where}: none of its {len(texts)} rows can be used; fix the file.")
    dropped = {reason: bad.count(reason) for reason in BAD_ROW_REASONS if reason in bad}
    return Split([str(texts[i]) for i in keep], ids[keep]), dropped


def label_names(task: TaskSpec, train: RawSplit, found: list[str] | None) -> list[str]:
    if task.labels:
        return list(task.labels)
    if found:
        return found
    if task.label_column not in train.frame.columns:
        return []  # checked_split reports the missing column
    values = train.frame[task.label_column].tolist()
    missing, numbers = _parse_labels(values, train.typed)
    if numbers is not None:
        ids = [n for n in numbers if isinstance(n, int)]  # floats are bad rows
        return [str(i) for i in range(max(ids) + 1)] if ids else []
    return sorted({str(v) for v, gone in zip(values, missing, strict=True) if not gone})
