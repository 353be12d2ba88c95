"""Records for the report side, made by the runner's own builders: a matrix of 2 tasks x 3
strategies x 2 seeds with known accuracies, times and memory, and helpers to read the tables
built from them."""

from __future__ import annotations

import typing
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from peft_arena.config.spec import CellSpec
from peft_arena.measure.metrics import classification_metrics, confidence_summary, per_class_f1
from peft_arena.records import builders, schema, store
from peft_arena.report import compare as comparing

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOTAL = 22_713_216
TASKS = ("agnews", "imdb")
# (task, strategy) -> per-seed accuracy. Chosen so the best strategy differs between tasks.
ACCURACY = {
    ("agnews", "full"): (0.91, 0.92),
    ("agnews", "lora"): (0.89, 0.88),
    ("agnews", "ia3"): (0.80, 0.83),
    ("imdb", "full"): (0.86, 0.85),
    ("imdb", "lora"): (0.87, 0.88),
    ("imdb", "ia3"): (0.79, 0.77),
}
TRAINABLE = {"full": TOTAL, "lora": 148_224, "ia3": 9_984}
TRAIN_S = {"full": 120.0, "lora": 60.0, "ia3": 45.0}
PEAK_MIB = {"full": 2048.0, "lora": 1024.0, "ia3": 900.0}
SEEDS = (0, 1)


LABELS = {"agnews": ["World", "Sports", "Business", "Sci/Tech"], "imdb": ["neg", "pos"]}
N_TEST = 200  # every accuracy above is a whole number of these examples
EPOCHS = 3


def predictions(task: str, strategy: str, seed: int, accuracy: float) -> tuple[list, list]:
    """Test labels (the same for every cell of a task) and predictions right on exactly
    round(accuracy * N_TEST) examples, spread over the classes."""
    n_classes = len(LABELS.get(task, "abc"))
    y_true = np.random.default_rng(len(task)).integers(0, n_classes, N_TEST)
    wrong = np.random.default_rng([zlib.crc32(strategy.encode()), seed]).permutation(N_TEST)
    wrong = wrong[: N_TEST - round(accuracy * N_TEST)]
    y_pred = y_true.copy()
    y_pred[wrong] = (y_true[wrong] + 1) % n_classes
    return y_true.tolist(), y_pred.tolist()


def make_record(
    task: str, strategy: str, seed: int, accuracy: float | None, **spec_overrides: Any
) -> dict[str, Any]:
    """A record made by the runner's own builders; accuracy None makes a failed cell.

    Per-class F1 and the confidence summary are computed from the synthetic predictions with
    the runner's own metric functions, so they agree with accuracy as in a real record.
    """
    spec = CellSpec(
        model=MODEL, task=task, strategy=strategy, seed=seed, max_length=64, batch_size=16,
        **spec_overrides,
    )
    failed = accuracy is None
    trainable = TRAINABLE.get(strategy, 1_000)
    train_s = TRAIN_S.get(strategy, 10.0) + seed  # seeds differ, so the std is not zero
    labels = LABELS.get(task, ["a", "b", "c"])
    metrics: dict[str, Any] = {}
    stored = None
    history: list[dict[str, Any]] = []
    if not failed:
        y_true, y_pred = predictions(task, strategy, seed, accuracy)
        correct = np.equal(y_true, y_pred)
        # Sure of right answers, less so of wrong ones: a realistic, imperfect calibration.
        confidence = np.where(correct, 0.95, 0.6) - 0.01 * seed
        metrics = {
            **classification_metrics(np.array(y_true), np.array(y_pred)),
            "eval_loss": 1 - accuracy, "val_accuracy": accuracy, "val_macro_f1": accuracy - 0.02,
            "per_class_f1": per_class_f1(np.array(y_true), np.array(y_pred), labels),
            "confidence": confidence_summary(confidence, correct),
        }
        stored = {"y_true": y_true, "y_pred": y_pred}
        history = [
            {"epoch": e, "step": 10 * e, "train_loss": 1.2 / e + 0.01 * seed,
             "val_loss": 1.0 / e + 0.1, "val_accuracy": accuracy - 0.1 / e,
             "val_macro_f1": accuracy - 0.12 / e}
            for e in range(1, EPOCHS + 1)
        ]
    memory = {"peak_bytes": int((PEAK_MIB.get(strategy, 500.0) + 10 * seed) * 1024**2),
              "source": "cpu_rss"}
    environment = {"versions": {"torch": "2.4.1", "peft": "0.17.0"},
                   "hardware": {"cpu": "AMD EPYC 7B13", "gpu": None},
                   "precision": "fp32", "git_commit": "a" * 40}
    if failed:
        error = {"type": "OutOfMemoryError", "message": "CUDA out of memory", "phase": "train",
                 "traceback": None}
        return builders.failed_record(spec, error, memory=memory, environment=environment)
    return builders.ok_record(
        spec, resolved={"label_names": labels}, data_hygiene={}, metrics=metrics,
        params={"trainable": trainable, "total": TOTAL, "trainable_pct": 100 * trainable / TOTAL},
        time={"total_s": train_s + 15.0,
              "phases": {"data_s": 5.0, "tokenize_s": 2.0, "model_s": 1.0, "train_s": train_s,
                         "eval_s": 7.0},
              "train_samples_per_s": 1000.0 / train_s, "train_tokens_per_s": 64000.0 / train_s,
              "eval_samples_per_s": 300.0},
        memory=memory, compute={}, history=history, best_step=None, stopped_early=False,
        artifacts={"model_dir": None}, predictions=stored, environment=environment,
        started_at="2025-01-01T00:00:00Z")


def write(results: Path, record: dict[str, Any]) -> None:
    store.write_record(store.record_path(results, record["cell_id"]), record)


def write_matrix(folder: Path) -> Path:
    """2 tasks x 3 strategies x 2 seeds, plus one failed cell (agnews / adalora)."""
    for (task, strategy), accuracies in ACCURACY.items():
        for seed, accuracy in zip(SEEDS, accuracies, strict=True):
            write(folder, make_record(task, strategy, seed, accuracy))
    write(folder, make_record("agnews", "adalora", 0, None))
    return folder


def write_folder(folder: Path, changes: dict[tuple[str, str], dict] | None = None) -> Path:
    """The test matrix (2 tasks x 3 strategies x 2 seeds), with per-cell edits applied to
    every seed: {"accuracy": delta, "train_factor": x, "memory_factor": x, "fail": True}."""
    changes = changes or {}
    for (task, strategy), accuracies in ACCURACY.items():
        change = changes.get((task, strategy), {})
        for seed, accuracy in zip(SEEDS, accuracies, strict=True):
            if change.get("fail"):
                write(folder, make_record(task, strategy, seed, None))
                continue
            record = make_record(task, strategy, seed, accuracy + change.get("accuracy", 0.0))
            record["time"]["phases"]["train_s"] *= change.get("train_factor", 1.0)
            record["memory"]["peak_bytes"] = int(
                record["memory"]["peak_bytes"] * change.get("memory_factor", 1.0))
            write(folder, record)
    return folder


def comparison_row(comparison: comparing.Comparison, task: str, strategy: str):
    rows = comparison.rows
    (index,) = rows.index[(rows["task"] == task) & (rows["strategy"] == strategy)]
    return rows.loc[index]


def markdown_row(markdown: str, task: str, strategy: str,
                 compact: bool = False) -> dict[str, str]:
    """The cells of one strategy's row in one task's table (the full one, folded under the
    compact one, unless `compact`), keyed by column header."""
    section = markdown.split(f"## {task}\n", 1)[1].split("\n## ", 1)[0]
    compact_part, _, full_part = section.partition("<details>")
    section = compact_part if compact or not full_part else full_part
    lines = [line for line in section.splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == strategy:
            return dict(zip(headers, cells, strict=True))
    raise AssertionError(f"no row for {strategy} in {task}:\n{section}")


# The record's sections that declare their fields (records.schema).
SECTIONS = {"resolved": schema.Resolved, "metrics": schema.Metrics, "params": schema.Params,
            "time": schema.Time, "memory": schema.Memory, "compute": schema.Compute,
            "generation": schema.Generation}


def undeclared(record: dict) -> list[str]:
    """Keys of a record, or of its sections, that records.schema does not declare."""
    declared = typing.get_type_hints(schema.Record)
    wrong = [key for key in record if key not in declared]
    for name, section in SECTIONS.items():
        fields = typing.get_type_hints(section)
        wrong += [f"{name}.{key}" for key in record.get(name) or {} if key not in fields]
    return wrong
