"""Records: one JSON file per cell, written atomically, read back tolerantly.

Record layout (schema version 1), all keys always present:

    schema_version  int
    cell_id         "<task>__<strategy>__seed<seed>__<config hash>"
    status          "ok" | "failed"
    spec            CellSpec.to_dict(): model, task, strategy, seed and every hyper-parameter
    metrics         {accuracy, macro_f1, eval_loss, val_accuracy, val_macro_f1} (empty if failed)
    params          {trainable, total, trainable_pct}
    time            {total_s, phases: {data_s, tokenize_s, model_s, train_s, eval_s},
                     train_samples_per_s, train_tokens_per_s, eval_samples_per_s}
    memory          {peak_bytes, source: "cpu_rss" | "nvml", ...source-specific extras}
    history         [{epoch, step, train_loss, val_loss, val_accuracy, val_macro_f1}, ...]
    error           null | {type, message, phase}
    environment     {versions: {...}, hardware: {...}, precision, threads, git_commit, ...}
    started_at, finished_at   ISO-8601 UTC
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RECORDS_SUBDIR = "records"


def records_dir(results_dir: Path) -> Path:
    return Path(results_dir) / RECORDS_SUBDIR


def record_path(results_dir: Path, cell_id: str) -> Path:
    path = records_dir(results_dir) / f"{cell_id}.json"
    # cell ids are built from checked names, but never trust a path that leaves the folder.
    if records_dir(results_dir).resolve() not in path.resolve().parents:
        raise ValueError(f"record path {path} escapes the results folder")
    return path


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target.

    A reader (or a crash) sees either the old file, the new file, or no file: never half a record.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None (with a warning) for a file that is not a peft-arena record."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"Skipping {path}: not readable JSON ({exc}).", stacklevel=2)
        return None
    if not isinstance(data, dict) or "schema_version" not in data or "spec" not in data:
        warnings.warn(f"Skipping {path}: not a peft-arena record.", stacklevel=2)
        return None
    if data["schema_version"] > SCHEMA_VERSION:
        warnings.warn(
            f"Skipping {path}: schema {data['schema_version']} is newer than this peft-arena "
            f"({SCHEMA_VERSION}); upgrade peft-arena to read it.",
            stacklevel=2,
        )
        return None
    return data


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    folder = records_dir(results_dir)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        record = read_record(path)
        if record is not None:
            yield record
