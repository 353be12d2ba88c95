"""The interactive explorer at the top of report.html: filters, a scatter of any two numeric
columns with its Pareto front, a cell's detail, training curves and memory over time.

Python builds one JSON payload from the report's frame and per-cell detail; the page itself
is a static template (explorer_assets/: HTML, CSS, JavaScript) with Plotly's own bundle
inlined from the `plotly` package, so the file still opens offline and makes no request.

Columns are picked from the frame, not listed here: every numeric column with a value in some
record becomes an axis, so a measurement added to the frame later appears without a change
to this file. What is listed here is only what a column is called and which way is better,
for the columns known today (and name patterns for families such as retention_*).
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from peft_arena.records import store
from peft_arena.report.results import PHASES, CellDetail

ASSETS = "explorer_assets"
# What a point is filtered by; "strategy" is the report's label (strategy@hash where a task
# ran one strategy under several configs); "kind", classification or generation.
FILTERS = ("task", "kind", "model", "strategy", "hardware", "seed")
# Numbers that name a cell rather than measure it.
NOT_AXES = {"seed", "git_dirty"}
DEFAULT_AXES = ("trainable", "accuracy")

MAX, MIN = "max", "min"
# column -> (what the page calls it, which way is better; None: neither)
KNOWN_COLUMNS: dict[str, tuple[str, str | None]] = {
    "accuracy": ("accuracy", MAX),
    "macro_f1": ("macro F1", MAX),
    "eval_loss": ("test loss", MIN),
    "trainable": ("trainable parameters", MIN),
    "total": ("total parameters", MIN),
    "trainable_pct": ("trainable %", MIN),
    "peak_mb": ("peak memory (MiB)", MIN),
    "weights_mb": ("weights (MiB)", MIN),
    "estimate_mb": ("estimated memory (MiB)", MIN),
    "estimate_error": ("memory estimate error", None),
    "memory_max_mb": ("memory max over time (MiB)", MIN),
    "memory_mean_mb": ("memory mean over time (MiB)", MIN),
    "memory_p99_mb": ("memory p99 over time (MiB)", MIN),
    "train_memory_p99_mb": ("training memory p99 (MiB)", MIN),
    "train_s": ("training time (s)", MIN),
    "total_s": ("total time (s)", MIN),
    "train_samples_per_s": ("throughput (samples/s)", MAX),
    "train_tokens_per_s": ("throughput (tokens/s)", MAX),
    "mfu": ("MFU", MAX),
    "confidence_mean": ("mean confidence", None),
    "confidence_above_0_9": ("share confident > 0.9", None),
    "ece": ("calibration error (ECE)", MIN),
    "max_length": ("max length", None),
    "batch_size": ("batch size", None),
}
# Families of columns by name: (prefix or suffix, better). Retention is what the base model
# kept (higher is better); a weight update's shape has no better direction.
PREFIX_BETTER = (("retention_", MAX), ("update_", None))
SUFFIX_BETTER = (("_per_s", MAX), ("_mb", MIN), ("_s", MIN), ("_bytes", MIN))


def column_better(name: str) -> str | None:
    if name in KNOWN_COLUMNS:
        return KNOWN_COLUMNS[name][1]
    for prefix, better in PREFIX_BETTER:
        if name.startswith(prefix):
            return better
    for suffix, better in SUFFIX_BETTER:
        if name.endswith(suffix):
            return better
    return None


def column_label(name: str) -> str:
    return KNOWN_COLUMNS[name][0] if name in KNOWN_COLUMNS else name.replace("_", " ")


def axis_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric columns with a finite value in some successful record: known ones in their
    listed order, then the others in the frame's order."""
    ok = frame[frame["status"] == "ok"]
    numeric = [name for name in frame.columns if name not in NOT_AXES
               and pd.api.types.is_numeric_dtype(frame[name])
               and not pd.api.types.is_bool_dtype(frame[name])
               and pd.to_numeric(ok[name], errors="coerce").notna().any()]
    known = [name for name in KNOWN_COLUMNS if name in numeric]
    return known + [name for name in numeric if name not in KNOWN_COLUMNS]


def _plain(value: Any) -> Any:
    """A JSON value: NaN and infinities become null, numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _record_link(results_dir: Path, report_dir: Path, cell_id: str) -> str:
    path = store.record_path(results_dir, cell_id)
    return Path(os.path.relpath(path, report_dir)).as_posix()


def _memory_curve(timeline: dict[str, Any] | None) -> dict[str, Any] | None:
    series = (timeline or {}).get("series")
    primary = (timeline or {}).get("primary")
    if not isinstance(series, dict) or not isinstance(primary, str):
        return None
    metrics = [name for name, values in series.items()
               if name not in ("t_s", "phase") and isinstance(values, list)]
    return {"primary": primary, "t_s": series.get("t_s", []),
            "phase": series.get("phase", []), **{name: series[name] for name in metrics},
            "metrics": metrics, "interval_s": timeline.get("interval_s"),
            "samples": timeline.get("samples")}


def _group_stats(summary: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(str(row["task"]), str(row["strategy"]), str(row["config_hash"])): {
        "accuracy_mean": row["accuracy_mean"], "accuracy_std": row["accuracy_std"],
        "n_seeds": row["n_seeds"], "n_failed": row["n_failed"]}
        for _, row in summary.iterrows()}


# The leaderboard's compact columns (report/build.py), one row per strategy of a task:
# (payload key, summary column). The page filters them as it filters the cells.
BOARD_COLUMNS = (("accuracy", "accuracy_mean"), ("accuracy_std", "accuracy_std"),
                 ("rank", "rank"), ("rank_low", "rank_low"), ("rank_high", "rank_high"),
                 ("tier", "tier"), ("trainable", "trainable"), ("peak_mb", "peak_mb_mean"),
                 ("train_s", "train_s_mean"), ("cka", "cka_mean"), ("n_seeds", "n_seeds"))


def kind_of(row: pd.Series) -> str:
    """A row's task kind; rows read from records made before generation tasks existed are
    classification."""
    kind = row.get("kind")
    return kind if isinstance(kind, str) else "classification"


def _board(summary: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for _, row in summary.iterrows():
        rows.append({
            "task": str(row["task"]), "kind": kind_of(row), "strategy": str(row["strategy"]),
            "model": None if pd.isna(row["model"]) else str(row["model"]),
            **{key: row.get(column) for key, column in BOARD_COLUMNS},
        })
    return rows


def build_payload(frame: pd.DataFrame, summary: pd.DataFrame, details: dict[str, CellDetail],
                  *, results_dir: Path, report_dir: Path) -> dict[str, Any]:
    """What the page draws. `frame` carries the report's `label` column (results.labelled);
    record links are relative to `report_dir`, where report.html is written."""
    columns = axis_columns(frame)
    groups = _group_stats(summary)
    rows, cells = [], {}
    for _, row in frame[frame["status"] == "ok"].iterrows():
        cell_id = row["cell_id"]
        if not isinstance(cell_id, str):
            continue
        key = (str(row["task"]), str(row["label"]), str(row["config_hash"]))
        rows.append({
            "cell_id": cell_id,
            **{name: (None if pd.isna(row[name]) else str(row[name]))
               for name in ("task", "model", "hardware", "precision")},
            "kind": kind_of(row),
            "strategy": str(row["label"]),
            "seed": None if pd.isna(row["seed"]) else int(row["seed"]),
            "values": {name: row[name] for name in columns},
            "group": groups.get(key, {}),
            "record": _record_link(results_dir, report_dir, cell_id),
        })
        detail = details.get(cell_id, CellDetail())
        cells[cell_id] = {
            "settings": detail.settings or {},
            "history": detail.history,
            "memory": _memory_curve(detail.memory_timeline),
            "times": {name: row[name] for name in (*PHASES, "total_s") if name in row},
        }
    return _plain({
        "columns": [{"key": name, "label": column_label(name), "better": column_better(name)}
                    for name in columns],
        "filters": list(FILTERS),
        "default_axes": [name for name in DEFAULT_AXES if name in columns]
                        or columns[:2],
        "rows": rows,
        "cells": cells,
        "board": _board(summary),
    })


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(ASSETS, name).read_text(encoding="utf-8")


def embedded_json(payload: dict[str, Any]) -> str:
    """JSON that cannot end the <script> element holding it, whatever the names inside say
    (a task called "</script>" stays data): '<', '>' and '&' as \\u escapes, which JSON reads
    back unchanged."""
    text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _inline_script(code: str) -> str:
    # A literal "</script" inside a script would end the element early.
    return "<script>" + code.replace("</script", "<\\/script") + "</script>"


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def explorer_html(payload: dict[str, Any]) -> str:
    """The explorer's HTML fragment (styles, markup, Plotly, data and the page's script)."""
    return "\n".join([
        f"<style>{_asset('explorer.css')}</style>",
        _asset("explorer.html"),
        _inline_script(plotly_js()),
        f'<script type="application/json" id="explorer-data">{embedded_json(payload)}</script>',
        _inline_script(_asset("explorer.js")),
    ])
