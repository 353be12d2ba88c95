"""Read a results folder: records into one flat row each, plus the per-cell detail that does
not fit a row (training history, per-class F1, test predictions), and per-strategy summaries.

Reading is tolerant: a record from an older or newer peft-arena, or one a user edited, may
lack any field; a missing value is NaN (a dash in the reports), never a crash and never a 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peft_arena.common.nested import dig
from peft_arena.measure.hardware_identity import hardware_identity
from peft_arena.records import store

MIB = 1024**2

# Phases of a cell in the order they run (older records lack some; save_s only when saving).
PHASES = ("setup_s", "data_s", "tokenize_s", "model_s", "prepare_s", "compile_s", "train_s",
          "validate_s", "eval_s", "measure_s", "retention_s", "save_s", "decode_s", "zero_shot_s")
# What the tuned model kept of the base and the shape of its update (records' `retention` and
# `weight_update` sections; NaN for records without them).
RETENTION_COLUMNS = ["cka", "transfer_task", "transfer_base", "transfer_tuned", "transfer_delta",
                     "perplexity_ratio", "update_norm", "update_rank", "update_rank_max",
                     "intruders"]
# The equal-budget search that chose a tuned cell's settings (its record's `tuning` section;
# NaN for a cell run at its defaults).
TUNING_COLUMNS = ["tune_budget", "tune_trials_s", "tune_settings", "tune_default_hash",
                  "tune_val_accuracy", "tune_default_val_accuracy"]
FRAME_COLUMNS = [
    "task", "kind", "strategy", "seed", "model", "config_hash", "cell_id", "status", "model_source",
    "accuracy", "macro_f1", "eval_loss", "invalid_share", "zero_shot_accuracy",
    "decode_tokens_per_s", "trainable", "total", "trainable_pct",
    *PHASES, "total_s", "retention_share", "train_samples_per_s", "train_tokens_per_s", "mfu",
    "mfu_model_gemm", "peak_mb", "weights_mb", "memory_source", "estimate_mb", "estimate_error",
    *(f"memory_{stat}_mb" for stat in ("max", "mean", "p99")), "train_memory_p99_mb",
    "estimate_error_cpu", "estimate_error_in_use", "rss_above_baseline_mb",
    "confidence_mean", "confidence_above_0_9", "ece",
    "precision", "max_length", "batch_size", "error_type", "error_message", "error_phase",
    "cpu", "gpu", "hardware", "git_commit", "git_dirty",
    *RETENTION_COLUMNS,
    *TUNING_COLUMNS,
]
# Summary statistic name -> per-record column it is computed from.
SUMMARY_METRICS = {
    "accuracy": "accuracy", "macro_f1": "macro_f1", "invalid_share": "invalid_share",
    "zero_shot_accuracy": "zero_shot_accuracy", "decode_tokens_per_s": "decode_tokens_per_s",
    "train_s": "train_s",
    "total_s": "total_s", "peak_mb": "peak_mb", "throughput": "train_samples_per_s",
    "tokens_per_s": "train_tokens_per_s", "mfu": "mfu",
    "ceiling_share": "mfu_model_gemm", "weights_mb": "weights_mb",
    "estimate_mb": "estimate_mb", "estimate_error": "estimate_error",
    "memory_mean": "memory_mean_mb", "memory_p99": "memory_p99_mb",
    "train_memory_p99": "train_memory_p99_mb",
    "estimate_error_cpu": "estimate_error_cpu", "rss_above_baseline_mb": "rss_above_baseline_mb",
    "estimate_error_in_use": "estimate_error_in_use",
    "confidence": "confidence_mean", "confident_share": "confidence_above_0_9", "ece": "ece",
    **{phase: phase for phase in PHASES if phase != "train_s"},
    "cka": "cka", "transfer_delta": "transfer_delta", "perplexity_ratio": "perplexity_ratio",
    "update_norm": "update_norm", "update_rank": "update_rank", "intruders": "intruders",
}
# What depends on the machine: never averaged across hardware (accuracy pools seeds from
# anywhere). See measure/hardware_identity.py for what counts as the same hardware.
QUALITY_METRICS = ("accuracy", "macro_f1", "invalid_share", "zero_shot_accuracy", "confidence",
                   "confident_share", "ece", "cka", "transfer_delta", "perplexity_ratio",
                   "update_norm", "update_rank", "intruders")
COST_METRICS = tuple(name for name in SUMMARY_METRICS if name not in QUALITY_METRICS)
SUMMARY_COLUMNS = [
    "task", "kind", "strategy", "base_strategy", "config_hash", "model", "status", "n_seeds",
    "n_failed", "error_type",
    *[f"{name}_{stat}" for name in SUMMARY_METRICS for stat in ("mean", "std")],
    "trainable", "total", "trainable_pct", "hardware", "n_hardware", "retention_share_max",
]


@dataclass(frozen=True)
class CellDetail:
    """What a record holds beyond its flat row."""

    history: list[dict[str, float]] = field(default_factory=list)
    per_class_f1: dict[str, float] = field(default_factory=dict)
    label_names: list[str] | None = None
    y_true: np.ndarray | None = None  # test labels, in the test split's order
    y_pred: np.ndarray | None = None
    # AdaLoRA: final rank per adapted module, and the rank every module started with.
    rank_pattern: dict[str, int] = field(default_factory=dict)
    initial_rank: int | None = None
    data_hygiene: dict[str, Any] | None = None  # the record's section, as written
    memory_timeline: dict[str, Any] | None = None  # memory.timeline, as written (or None)
    settings: dict[str, Any] | None = None  # the record's spec, as written


@dataclass
class Results:
    frame: pd.DataFrame  # one row per record, FRAME_COLUMNS
    details: dict[str, CellDetail]  # keyed by cell_id


# --- tolerant field access --------------------------------------------------------------------


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


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


def _flag(value: Any) -> float:
    """A yes/no record value as 1.0 or 0.0 (NaN when unknown), so it survives a CSV round trip
    like every other number."""
    return float(value) if isinstance(value, bool) else math.nan


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


# --- one record -------------------------------------------------------------------------------


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    cell_id = record.get("cell_id") if isinstance(record.get("cell_id"), str) else ""
    error = record.get("error") if isinstance(record.get("error"), dict) else None
    status = record.get("status")
    seed_part = _id_part(cell_id, 2) or ""
    confidence = dig(record, "metrics", "confidence")
    return {
        "task": spec.get("task") or _id_part(cell_id, 0) or "unknown",
        # Records made before generation tasks existed are classification.
        "kind": _text(record.get("task_kind")) or "classification",
        "strategy": spec.get("strategy") or _id_part(cell_id, 1) or "unknown",
        "seed": _integer(spec.get("seed", seed_part.removeprefix("seed"))),
        "model": _text(spec.get("model")),
        "model_source": _model_source_text(dig(record, "resolved", "model_source")),
        "config_hash": cell_id.rsplit("__", 1)[-1] if "__" in cell_id else "unknown",
        "cell_id": cell_id or None,
        "status": status if isinstance(status, str) else ("failed" if error else "ok"),
        **{k: _number(dig(record, "metrics", k))
           for k in ("accuracy", "macro_f1", "eval_loss", "invalid_share")},
        "zero_shot_accuracy": _number(dig(record, "metrics", "zero_shot", "accuracy")),
        "decode_tokens_per_s": _number(dig(record, "generation", "decoding", "tokens_per_s")),
        "trainable": _integer(dig(record, "params", "trainable")),
        "total": _integer(dig(record, "params", "total")),
        "trainable_pct": _number(dig(record, "params", "trainable_pct")),
        **{phase: _number(dig(record, "time", "phases", phase)) for phase in PHASES},
        "total_s": _number(dig(record, "time", "total_s")),
        # The retention phase's part of the cell's time (the goal: at most a tenth).
        "retention_share": _share(_number(dig(record, "time", "phases", "retention_s")),
                                  _number(dig(record, "time", "total_s"))),
        "train_samples_per_s": _number(dig(record, "time", "train_samples_per_s")),
        "train_tokens_per_s": _number(dig(record, "time", "train_tokens_per_s")),
        "mfu": _number(dig(record, "compute", "mfu")),
        # achieved FLOP/s over the matmul rate at the model's own shapes (measure.flops)
        "mfu_model_gemm": _number(dig(record, "compute", "mfu_model_gemm")),
        "peak_mb": _number(dig(record, "memory", "peak_bytes")) / MIB,
        "weights_mb": _number(dig(record, "memory", "weights_bytes")) / MIB,
        "memory_source": _text(dig(record, "memory", "source")),
        **_estimate_columns(record),
        **_timeline_columns(dig(record, "memory", "timeline")),
        "confidence_mean": _number(dig(confidence, "mean")),
        "confidence_above_0_9": _number(dig(confidence, "share_above_0_9")),
        "ece": _number(dig(confidence, "ece")),
        "precision": _text(dig(record, "environment", "precision") or spec.get("precision")),
        "max_length": _integer(spec.get("max_length")),
        "batch_size": _integer(spec.get("batch_size")),
        **{f"error_{k}": _text(dig(error, k)) for k in ("type", "message", "phase")},
        "cpu": _text(dig(record, "environment", "hardware", "cpu")),
        "gpu": _text(dig(record, "environment", "hardware", "gpu")),
        "hardware": hardware_identity(record),
        "git_commit": _text(dig(record, "environment", "git_commit")),
        "git_dirty": _flag(dig(record, "environment", "git_dirty")),
        **_retention_columns(record),
        **_tuning_columns(record),
    }


def _tuning_columns(record: dict[str, Any]) -> dict[str, Any]:
    section = record.get("tuning") if isinstance(record.get("tuning"), dict) else {}
    settings = section.get("settings")
    return {
        "tune_budget": _integer(section.get("budget")),
        "tune_trials_s": _number(section.get("trials_s")),
        "tune_settings": ", ".join(f"{k}={_setting_text(v)}" for k, v in settings.items())
        if isinstance(settings, dict) else None,
        "tune_default_hash": _text(section.get("default_config_hash")),
        "tune_val_accuracy": _number(section.get("val_accuracy")),
        "tune_default_val_accuracy": _number(section.get("default_val_accuracy")),
    }


def _setting_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _retention_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The retention and weight-update figures (NaN where a record lacks them or says they
    were not measured)."""
    kept = record.get("retention") if isinstance(record.get("retention"), dict) else {}
    if kept.get("measured") is not True:
        kept = {}
    summary = dig(record, "weight_update", "summary")
    return {
        "cka": _number(kept.get("cka")),
        "transfer_task": _text(dig(kept, "transfer", "task")),
        "transfer_base": _number(dig(kept, "transfer", "base_accuracy")),
        "transfer_tuned": _number(dig(kept, "transfer", "tuned_accuracy")),
        "transfer_delta": _number(dig(kept, "transfer", "delta")),
        "perplexity_ratio": _number(dig(kept, "lm", "perplexity_ratio")),
        "update_norm": _number(dig(summary, "relative_norm")),
        "update_rank": _number(dig(summary, "effective_rank_mean")),
        "update_rank_max": _number(dig(summary, "effective_rank_max")),
        "intruders": _number(dig(summary, "intruders")),
    }


def _model_source_text(source: Any) -> str | None:
    """`GGUF Q4_1, dequantized` for weights read from a quantized file; None for others."""
    if not isinstance(source, dict) or not source.get("format"):
        return None
    text = f"{str(source['format']).upper()} {source.get('quantization') or '?'}"
    return f"{text}, dequantized" if source.get("dequantized") else text


def _estimate_columns(record: dict[str, Any]) -> dict[str, float]:
    """The dry run's memory estimate, and its relative error against torch's peak allocated
    memory, which counts the same tensors (GPU records only: a CPU process's peak resident
    memory also holds the interpreter and its libraries, hundreds of MiB that dwarf a small
    model's tensors, so an error against it would measure those)."""
    estimate = _number(dig(record, "memory_tools", "estimate", "total_bytes"))
    measured = _number(dig(record, "memory", "torch_peak_allocated_bytes"))
    error = (estimate - measured) / measured if measured > 0 else math.nan
    # CPU records since measure.estimate_check: against the peak above the setup baseline.
    cpu_error = _number(dig(record, "memory_tools", "estimate_check", "error"))
    cpu_measured = _number(dig(record, "memory_tools", "estimate_check", "measured_bytes"))
    # Against the memory in use: the rise less the allocator's free blocks that stay resident.
    in_use_error = _number(dig(record, "memory_tools", "estimate_check", "in_use_error"))
    return {"estimate_mb": estimate / MIB, "estimate_error": error,
            "estimate_error_cpu": cpu_error, "estimate_error_in_use": in_use_error,
            "rss_above_baseline_mb": cpu_measured / MIB}


def _timeline_columns(timeline: Any) -> dict[str, float]:
    """Max, mean and p99 of the memory sampled through the cell (its primary metric: device
    memory on a GPU, RSS on CPU), and p99 of the training phase; NaN in older records."""
    primary = dig(timeline, "primary")
    overall = dig(timeline, "stats", primary) if isinstance(primary, str) else None
    train = dig(timeline, "phases", "train", primary) if isinstance(primary, str) else None
    return {**{f"memory_{stat}_mb": _number(dig(overall, stat)) / MIB
               for stat in ("max", "mean", "p99")},
            "train_memory_p99_mb": _number(dig(train, "p99")) / MIB}


def _history(value: Any) -> list[dict[str, float]]:
    entries = value if isinstance(value, list) else []
    return [{k: _number(v) for k, v in entry.items()} for entry in entries
            if isinstance(entry, dict)]


def _labels(value: Any) -> np.ndarray | None:
    if not isinstance(value, list) or not value:
        return None
    numbers = [_integer(v) for v in value]
    return None if None in numbers else np.asarray(numbers, dtype=np.int64)


def _detail(record: dict[str, Any]) -> CellDetail:
    scores = dig(record, "metrics", "per_class_f1")
    names = dig(record, "resolved", "label_names")
    y_true = _labels(dig(record, "predictions", "y_true"))
    y_pred = _labels(dig(record, "predictions", "y_pred"))
    if y_true is None or y_pred is None or len(y_true) != len(y_pred):
        y_true = y_pred = None  # half a pair cannot be scored
    ranks = dig(record, "strategy_state", "rank_pattern")
    return CellDetail(
        rank_pattern={str(k): int(v) for k, v in ranks.items() if _integer(v) is not None}
        if isinstance(ranks, dict) else {},
        initial_rank=_integer(dig(record, "strategy_state", "init_r")),
        history=_history(record.get("history")),
        per_class_f1={str(k): _number(v) for k, v in scores.items()}
        if isinstance(scores, dict) else {},
        label_names=[str(n) for n in names] if isinstance(names, list) else None,
        y_true=y_true, y_pred=y_pred,
        data_hygiene=hygiene if isinstance(hygiene := record.get("data_hygiene"), dict) else None,
        settings=spec if isinstance(spec := record.get("spec"), dict) else None,
        memory_timeline=timeline if isinstance(
            timeline := dig(record, "memory", "timeline"), dict) else None,
    )


# --- a folder ---------------------------------------------------------------------------------


def load_results(results_dir: Path) -> Results:
    """Every record in results_dir/records; unreadable or foreign files are skipped."""
    rows, details = [], {}
    for record in store.iter_records(Path(results_dir)):
        row = _flatten(record)
        rows.append(row)
        if row["cell_id"]:
            details[row["cell_id"]] = _detail(record)
    # Missing text is NaN, like missing numbers, so the frame equals its own CSV read back.
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS).fillna(math.nan)
    frame = frame.sort_values(["task", "strategy", "config_hash", "seed"], ignore_index=True)
    return Results(frame, details)


def load_frame(results_dir: Path) -> pd.DataFrame:
    """One row per record in results_dir/records."""
    return load_results(results_dir).frame


# --- summarising ------------------------------------------------------------------------------


def strategy_labels(frame: pd.DataFrame) -> pd.Series:
    """`strategy`, or `strategy@hash` where a task ran the strategy under several configs.
    When the records hold more than one model, each label starts with its model's short name
    (`smollm2 lora`), so tables and charts keep the models apart.

    Different configurations are different experiments: averaging them would hide that.
    """
    models = frame["model"].fillna("").astype(str)
    strategy = frame["strategy"]
    if "tune_budget" in frame:  # a searched cell reads `lora tuned`, beside its default
        strategy = strategy.where(frame["tune_budget"].isna(), strategy + " tuned")
    if models.nunique() > 1:
        names = models.map(model_label) + " " + strategy
        keys = [frame["task"], models, strategy]
    else:
        names, keys = strategy, [frame["task"], strategy]
    n_configs = frame.groupby(keys)["config_hash"].transform("nunique")
    return names.where(n_configs <= 1, names + "@" + frame["config_hash"])


def model_label(model: str) -> str:
    """A model's short name: an alias as given, a folder or file by its last part."""
    return Path(model.rstrip("/")).name or model if model else "?"


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a `label` column (see strategy_labels)."""
    if frame.empty:
        return frame.assign(label=pd.Series(dtype=object))
    return frame.assign(label=strategy_labels(frame))


def _first(values: pd.Series) -> Any:
    values = values.dropna()
    return values.iloc[0] if len(values) else math.nan


def _status(n_ok: int, n_failed: int) -> str:
    if n_failed == 0:
        return "ok"
    return "failed" if n_ok == 0 else "partial"


def cost_hardware(frame: pd.DataFrame) -> dict[str, Any]:
    """task -> the hardware whose records give the task's times, memory and MFU: the one with
    the most successful records in the task (ties: the first by name); NaN for a task whose
    records name none."""
    ok = frame[frame["status"] == "ok"]
    chosen: dict[str, Any] = {}
    for task, rows in ok.groupby("task", sort=True):
        counts = rows["hardware"].dropna().value_counts()
        chosen[str(task)] = (sorted(counts[counts == counts.max()].index)[0]
                             if len(counts) else math.nan)
    return chosen


def _summarise_group(key: tuple[str, str, str], group: pd.DataFrame,
                     hardware: Any = math.nan) -> dict[str, Any]:
    ok = group[group["status"] == "ok"]
    # Costs only from the task's chosen hardware; records that name none count as it.
    on_hardware = ok if not isinstance(hardware, str) else ok[
        ok["hardware"].isna() | (ok["hardware"] == hardware)]
    failed = group[group["status"] != "ok"]
    row: dict[str, Any] = {
        "task": key[0], "kind": _first(group["kind"]), "strategy": key[1],
        "base_strategy": group["strategy"].iloc[0],
        "config_hash": key[2], "model": _first(group["model"]),
        "status": _status(len(ok), len(failed)), "n_seeds": len(ok), "n_failed": len(failed),
        "error_type": _first(failed["error_type"]),
    }
    # Only successful seeds count: a failed cell has no score, it must not average in as 0.
    for name, column in SUMMARY_METRICS.items():
        rows = on_hardware if name in COST_METRICS else ok
        values = rows[column].astype(float).dropna()
        row[f"{name}_mean"] = values.mean()
        row[f"{name}_std"] = values.std(ddof=1)  # sample sd; NaN with a single seed
    for column in ("trainable", "total", "trainable_pct"):
        row[column] = _first(ok[column])
    row["hardware"] = hardware if isinstance(hardware, str) else _first(ok["hardware"])
    # The largest over seeds, not the mean: the claim to check is "every cell".
    row["retention_share_max"] = on_hardware["retention_share"].astype(float).max()
    row["n_hardware"] = ok["hardware"].nunique()
    return row


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, strategy label, config hash), best accuracy first within a task."""
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    groups = labelled(frame).groupby(["task", "label", "config_hash"], sort=True)
    hardware = cost_hardware(frame)
    summary = pd.DataFrame([_summarise_group(k, g, hardware.get(str(k[0]), math.nan))
                            for k, g in groups], columns=SUMMARY_COLUMNS)
    return sort_summary(summary)


def sort_summary(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.sort_values(
        ["task", "accuracy_mean", "strategy"], ascending=[True, False, True],
        na_position="last", ignore_index=True,
    )
