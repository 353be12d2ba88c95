"""Turn the records of a results folder into tables, a markdown leaderboard and charts.

A report only reads records (it never re-runs anything), so it can be rebuilt at any time,
on any machine that has the results folder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from peft_arena import charts, store
from peft_arena.errors import UserError

MIB = 1024**2
DASH = "—"

FRAME_COLUMNS = [
    "task", "strategy", "seed", "model", "config_hash", "status",
    "accuracy", "macro_f1", "eval_loss", "trainable", "total", "trainable_pct",
    "train_s", "eval_s", "total_s", "train_samples_per_s", "peak_mb", "memory_source",
    "precision", "max_length", "batch_size", "error_type", "error_message", "error_phase",
    "cpu", "gpu", "git_commit",
]
# Summary statistic name -> per-record column it is computed from.
SUMMARY_METRICS = {
    "accuracy": "accuracy", "macro_f1": "macro_f1", "train_s": "train_s",
    "total_s": "total_s", "peak_mb": "peak_mb", "throughput": "train_samples_per_s",
}
SUMMARY_COLUMNS = [
    "task", "strategy", "base_strategy", "config_hash", "model", "status", "n_seeds",
    "n_failed", "error_type",
    *[f"{name}_{stat}" for name in SUMMARY_METRICS for stat in ("mean", "std")],
    "trainable", "total", "trainable_pct",
]

LEGEND = (
    "Columns: accuracy and macro F1 on the test split (mean ± sample sd over seeds when more "
    "than one); trainable params and their % of total params; train s = training phase, "
    "total s = whole cell (data, model, training, evaluation), both mean wall-clock seconds; "
    "peak MiB = mean peak memory; seeds = successful seeds (failed ones noted). "
    "**Bold** = best in the task (highest accuracy/F1, lowest params/time/memory)."
)
MEMORY_NOTE = (
    "Peak memory is the CPU RSS of the cell's own process on CPU runs, or GPU memory read "
    "through NVML on GPU runs, so CPU and GPU numbers are not comparable."
)


@dataclass
class ReportResult:
    summary: pd.DataFrame
    frame: pd.DataFrame
    paths: list[Path]
    provenance: str


# --- reading records --------------------------------------------------------------------------


def _dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]..., or None as soon as a level is missing or is not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _number(value: Any) -> float:
    # A bool is an int to Python, but True where a number belongs is a broken record, not 1.
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    """Free-form record values (hardware may be a string, a list or a dict) as one string."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, (list, tuple)):
        return ", ".join(filter(None, (_text(v) for v in value))) or None
    if isinstance(value, dict) and "name" in value:
        return _text(value["name"])
    return str(value)


def _id_part(cell_id: str, index: int) -> str | None:
    # "<task>__<strategy>__seed<seed>__<hash>": a fallback for specs that lack a field.
    parts = cell_id.split("__")
    return parts[index] if len(parts) == 4 else None


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    cell_id = record.get("cell_id") if isinstance(record.get("cell_id"), str) else ""
    error = record.get("error") if isinstance(record.get("error"), dict) else None
    status = record.get("status")
    seed_part = _id_part(cell_id, 2) or ""
    return {
        "task": spec.get("task") or _id_part(cell_id, 0) or "unknown",
        "strategy": spec.get("strategy") or _id_part(cell_id, 1) or "unknown",
        "seed": _integer(spec.get("seed", seed_part.removeprefix("seed"))),
        "model": _text(spec.get("model")),
        "config_hash": cell_id.rsplit("__", 1)[-1] if "__" in cell_id else "unknown",
        "status": status if isinstance(status, str) else ("failed" if error else "ok"),
        **{k: _number(_dig(record, "metrics", k)) for k in ("accuracy", "macro_f1", "eval_loss")},
        "trainable": _integer(_dig(record, "params", "trainable")),
        "total": _integer(_dig(record, "params", "total")),
        "trainable_pct": _number(_dig(record, "params", "trainable_pct")),
        **{k: _number(_dig(record, "time", "phases", k)) for k in ("train_s", "eval_s")},
        "total_s": _number(_dig(record, "time", "total_s")),
        "train_samples_per_s": _number(_dig(record, "time", "train_samples_per_s")),
        "peak_mb": _number(_dig(record, "memory", "peak_bytes")) / MIB,
        "memory_source": _text(_dig(record, "memory", "source")),
        "precision": _text(_dig(record, "environment", "precision") or spec.get("precision")),
        "max_length": _integer(spec.get("max_length")),
        "batch_size": _integer(spec.get("batch_size")),
        **{f"error_{k}": _text(_dig(error, k)) for k in ("type", "message", "phase")},
        "cpu": _text(_dig(record, "environment", "hardware", "cpu")),
        "gpu": _text(_dig(record, "environment", "hardware", "gpu")),
        "git_commit": _text(_dig(record, "environment", "git_commit")),
    }


def load_frame(results_dir: Path) -> pd.DataFrame:
    """One row per record in results_dir/records; unreadable or foreign files are skipped."""
    rows = [_flatten(record) for record in store.iter_records(Path(results_dir))]
    # Missing text is NaN, like missing numbers, so the frame equals its own CSV read back.
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS).fillna(math.nan)
    return frame.sort_values(["task", "strategy", "config_hash", "seed"], ignore_index=True)


# --- summarising ------------------------------------------------------------------------------


def strategy_labels(frame: pd.DataFrame) -> pd.Series:
    """`strategy`, or `strategy@hash` where a task ran the strategy under several configs.

    Different configurations are different experiments: averaging them would hide that.
    """
    n_configs = frame.groupby(["task", "strategy"])["config_hash"].transform("nunique")
    return frame["strategy"].where(n_configs <= 1, frame["strategy"] + "@" + frame["config_hash"])


def _first(values: pd.Series) -> Any:
    values = values.dropna()
    return values.iloc[0] if len(values) else math.nan


def _status(n_ok: int, n_failed: int) -> str:
    if n_failed == 0:
        return "ok"
    return "failed" if n_ok == 0 else "partial"


def _summarise_group(key: tuple[str, str, str], group: pd.DataFrame) -> dict[str, Any]:
    ok = group[group["status"] == "ok"]
    failed = group[group["status"] != "ok"]
    row: dict[str, Any] = {
        "task": key[0], "strategy": key[1], "base_strategy": group["strategy"].iloc[0],
        "config_hash": key[2], "model": _first(group["model"]),
        "status": _status(len(ok), len(failed)), "n_seeds": len(ok), "n_failed": len(failed),
        "error_type": _first(failed["error_type"]),
    }
    # Only successful seeds count: a failed cell has no score, it must not average in as 0.
    for name, column in SUMMARY_METRICS.items():
        values = ok[column].astype(float)
        row[f"{name}_mean"] = values.mean()
        row[f"{name}_std"] = values.std(ddof=1)  # sample sd; NaN with a single seed
    for column in ("trainable", "total", "trainable_pct"):
        row[column] = _first(ok[column])
    return row


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, strategy label, config hash), best accuracy first within a task."""
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    labelled = frame.assign(label=strategy_labels(frame))
    groups = labelled.groupby(["task", "label", "config_hash"], sort=True)
    summary = pd.DataFrame([_summarise_group(k, g) for k, g in groups], columns=SUMMARY_COLUMNS)
    return _sort(summary)


def _sort(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.sort_values(
        ["task", "accuracy_mean", "strategy"], ascending=[True, False, True],
        na_position="last", ignore_index=True,
    )


# --- formatting -------------------------------------------------------------------------------


def human_count(n: float) -> str:
    """148224 -> '148.2K', 22713216 -> '22.7M'."""
    if not math.isfinite(n):
        return DASH
    if abs(n) < 1000:
        return f"{n:.0f}"
    for unit, scale in (("K", 1e3), ("M", 1e6)):
        # Check after rounding, so 999_960 reads 1.0M and not 1000.0K.
        if round(abs(n) / scale, 1) < 1000:
            return f"{n / scale:.1f}{unit}"
    return f"{n / 1e9:.1f}B"


def _pct(value: float) -> str:
    return f"{value:.3g}%"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:,.{digits}f}"


def _seeds_text(row: pd.Series) -> str:
    if not row["n_failed"]:
        return str(row["n_seeds"])
    if not row["n_seeds"]:
        return f"{row['n_failed']} failed"
    error = f": {row['error_type']}" if isinstance(row["error_type"], str) else ""
    return f"{row['n_seeds']} (+{row['n_failed']} failed{error})"


def _spread(row: pd.Series, name: str, digits: int) -> str:
    std = row[f"{name}_std"]
    return f" ± {std:.{digits}f}" if row["n_seeds"] > 1 and math.isfinite(std) else ""


@dataclass(frozen=True)
class _Column:
    header: str
    key: str  # summary column holding the value that decides "best"
    fmt: Callable[[float], str]
    best: str | None = None  # "max" or "min"
    spread: str | None = None  # summary metric whose std is appended when n_seeds > 1


_COLUMNS = (
    _Column("accuracy", "accuracy_mean", _fixed(3), "max", "accuracy"),
    _Column("macro F1", "macro_f1_mean", _fixed(3), "max", "macro_f1"),
    _Column("trainable params", "trainable", human_count, "min"),
    _Column("trainable %", "trainable_pct", _pct, "min"),
    _Column("total params", "total", human_count, "min"),
    _Column("train s", "train_s_mean", _fixed(1), "min"),
    _Column("total s", "total_s_mean", _fixed(1), "min"),
    _Column("peak MiB", "peak_mb_mean", _fixed(0), "min"),
)


def _values(table: pd.DataFrame, column: _Column) -> list[float]:
    # Failed rows have no value to compete with (and must never win "lowest time").
    return [
        float(v) if row["n_seeds"] > 0 and pd.notna(v) else math.nan
        for v, (_, row) in zip(table[column.key], table.iterrows(), strict=True)
    ]


def _best_text(values: list[float], column: _Column) -> str | None:
    """The formatted best value, or None when there is nothing to compare."""
    finite = [v for v in values if math.isfinite(v)]
    # All equal (say, one base model's total params) or a single row: no winner to point at.
    if column.best is None or len({column.fmt(v) for v in finite}) < 2:
        return None
    return column.fmt(max(finite) if column.best == "max" else min(finite))


def _column_cells(table: pd.DataFrame, column: _Column) -> list[str]:
    values = _values(table, column)
    best = _best_text(values, column)
    cells = []
    for value, (_, row) in zip(values, table.iterrows(), strict=True):
        if not math.isfinite(value):
            cells.append(DASH)
            continue
        text = column.fmt(value)
        # Ties on the shown value are all bold: the reader cannot tell them apart either.
        bold = text == best
        text += _spread(row, column.spread, 3) if column.spread else ""
        cells.append(f"**{text}**" if bold else text)
    return cells


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _failed_text(row: pd.Series) -> str:
    error = row["error_type"] if isinstance(row["error_type"], str) else "error"
    return _escape(f"failed ({error})")


def _markdown_table(table: pd.DataFrame) -> str:
    table = _sort(table)
    columns = [_column_cells(table, c) for c in _COLUMNS]
    headers = ["strategy", *(c.header for c in _COLUMNS), "seeds"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for i, (_, row) in enumerate(table.iterrows()):
        cells = [col[i] for col in columns]
        if row["n_seeds"] == 0:
            cells[0] = _failed_text(row)  # never a 0: a failed cell has no score
        lines.append("| " + " | ".join([_escape(row["strategy"]), *cells, _seeds_text(row)]) + " |")
    return "\n".join(lines)


def _chart_links(chart_paths: Sequence[Path | str] | None) -> list[str]:
    names = [Path(p).stem for p in chart_paths] if chart_paths is not None else [
        c.name for c in charts.CHARTS
    ]
    if not names:
        return []
    links = [f"![{charts.chart_title(n)}]({charts.CHARTS_SUBDIR}/{n}.png)" for n in names]
    return ["## Charts", "", *(f"{link}\n" for link in links)]


def leaderboard_markdown(
    summary: pd.DataFrame,
    provenance_line: str,
    chart_paths: Sequence[Path | str] | None = None,
) -> str:
    """A markdown leaderboard: one table per task, then the charts.

    chart_paths: the charts to link (their file names are used); None links every chart
    that `charts.write_charts` can draw.
    """
    parts = ["# peft-arena leaderboard", "", provenance_line, "", LEGEND, "", MEMORY_NOTE, ""]
    for task, table in summary.groupby("task", sort=True):
        parts += [f"## {_escape(str(task))}", "", _markdown_table(table), ""]
    parts += _chart_links(chart_paths)
    return "\n".join(parts).rstrip() + "\n"


# --- provenance and terminal table ------------------------------------------------------------


def _distinct(values: pd.Series) -> str | None:
    unique = sorted({str(v) for v in values.dropna()})
    return ", ".join(unique) or None


def _short_commit(commit: str) -> str:
    # A full 40-hex hash is noise in a one-line header; keep a suffix such as "-dirty".
    return re.sub(r"\b([0-9a-f]{10})[0-9a-f]{30}\b", r"\1", commit)


def provenance_line(frame: pd.DataFrame) -> str:
    """One line saying what produced the numbers: model, precision, hardware, commit."""
    fields = [("model", "model"), ("precision", "precision"), ("CPU", "cpu"), ("GPU", "gpu")]
    parts = [f"{label}: {text}" for label, col in fields if (text := _distinct(frame[col]))]
    if commit := _distinct(frame["git_commit"]):
        parts.append(f"git commit: {_short_commit(commit)}")
    n_failed = int((frame["status"] != "ok").sum())
    parts.append(f"{len(frame)} records ({n_failed} failed)")
    return "Provenance: " + " · ".join(parts)


def _cell(value: Any, fmt: Callable[[float], str]) -> str:
    return fmt(float(value)) if pd.notna(value) else DASH


_STATUS_STYLE = {"ok": "green", "partial": "yellow", "failed": "red"}


def rich_table(summary: pd.DataFrame) -> Table:
    """The summary as a terminal table (metrics are means over successful seeds)."""
    table = Table(title="peft-arena results", show_lines=False)
    for name in ("task", "strategy"):
        table.add_column(name)
    for name in ("accuracy", "macro F1", "trainable", "%", "train s", "peak MiB", "seeds"):
        table.add_column(name, justify="right")
    table.add_column("status")
    for _, row in summary.iterrows():
        accuracy = _cell(row["accuracy_mean"], _fixed(3)) + _spread(row, "accuracy", 3)
        style = _STATUS_STYLE.get(row["status"], "")
        status = row["status"] if row["n_seeds"] else _failed_text(row).replace("\\|", "|")
        table.add_row(
            str(row["task"]), str(row["strategy"]), accuracy,
            _cell(row["macro_f1_mean"], _fixed(3)), _cell(row["trainable"], human_count),
            _cell(row["trainable_pct"], _pct), _cell(row["train_s_mean"], _fixed(1)),
            _cell(row["peak_mb_mean"], _fixed(0)), _seeds_text(row),
            f"[{style}]{status}[/]" if style else status,
        )
    return table


# --- the report -------------------------------------------------------------------------------


def _write_charts(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    # Label on the whole frame, so charts and tables agree on which configs are split apart.
    labelled = frame.assign(label=strategy_labels(frame))
    return charts.write_charts(labelled, out_dir / charts.CHARTS_SUBDIR, hue="label")


def build_report(results_dir: Path, out_dir: Path | None = None) -> ReportResult:
    """Write leaderboard.md, results.csv, summary.csv and charts/*.png into out_dir."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    frame = load_frame(results_dir)
    if frame.empty:
        raise UserError(
            f"No records in {results_dir}: run `peft-arena run` first or pass --results."
        )
    summary = summarise(frame)
    provenance = provenance_line(frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_paths = _write_charts(frame, out_dir)
    markdown = leaderboard_markdown(summary, provenance, chart_paths)
    (out_dir / "leaderboard.md").write_text(markdown, encoding="utf-8")
    frame.to_csv(out_dir / "results.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    written = [out_dir / n for n in ("leaderboard.md", "results.csv", "summary.csv")]
    return ReportResult(summary, frame, [*written, *chart_paths], provenance)
