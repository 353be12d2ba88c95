"""Records: one JSON file per cell, written atomically, read back tolerantly.

Record layout (schema version 1), all keys always present:

    schema_version  int
    cell_id         "<task>__<strategy>__seed<seed>__<config hash>"
    status          "ok" | "failed"
    spec            CellSpec.to_dict(): model, task, strategy, seed and every hyper-parameter
    metrics         {accuracy, macro_f1, eval_loss, val_accuracy, val_macro_f1,
                     per_class_f1: {label: f1}, confidence: {mean, share_above_0_9, ece}}
                    (empty if failed)
    params          {trainable, total, trainable_pct (4-bit weights counted unquantized),
                     adapter_bytes: size on disk of what save_pretrained writes (the adapter
                     and head for PEFT, the whole model for full fine-tuning)}
    time            {total_s (from the cell's start; interpreter start-up and imports are not
                     in it), phases: {setup_s, data_s, tokenize_s, model_s, train_s,
                     validate_s, eval_s, measure_s, [save_s]} (disjoint; they sum to within a
                     few percent of total_s; train_s excludes validation passes),
                     train_samples_per_s, train_tokens_per_s, eval_samples_per_s,
                     eval_tokens_per_s} (tokens: real, non-padding)
    memory          {peak_bytes, source: "cpu_rss" | "nvml", weights_bytes (parameters and
                     buffers as stored: 4-bit packed weights at their real size),
                     batch_size, max_length, and for "nvml": device_peak_bytes,
                     device_baseline_bytes, process_peak_bytes, process_match,
                     torch_peak_allocated_bytes, torch_peak_reserved_bytes, contended,
                     other_processes_peak_bytes, other_processes_peak_count, nvml_error,
                     cpu_peak_rss_bytes} (see measure.py)
    compute         {train_flops, train_flops_per_s, peak_flops_per_s, peak_source: "measured"
                     | "cached", peak_under_load, peak_dtype, mfu, non_embedding_params,
                     trainable_non_embedding_params} (see flops.py; empty if failed)
    history         [{epoch, step, train_loss, val_loss, val_accuracy, val_macro_f1}, ...]
    predictions     {y_true: [label id, ...], y_pred: [...]} on the test split, in its order
                    (null if failed)
    error           null | {type, message, phase}
    run_id          the matrix run that wrote the record (absent in records made elsewhere)
    environment     {versions: {package: version}, hardware: {cpu, cpu_count, cpu_bf16_flags,
                     torch_threads, torch_interop_threads, thread_variables, platform, python,
                     [gpu, gpu_count, gpu_memory_bytes, cuda, cudnn, gpu_driver]}, precision,
                     git_commit, git_dirty}
    execution       how and where the cell ran (absent in older records): {processes (ranks of
                     a multi-device cell), distributed_type, threads (torch threads per
                     process), per_rank_peak_bytes, hardware (measure/hardware_identity.py:
                     what its speed depends on)} from the cell; {executor, workers, worker,
                     attempts, environment (thread and device variables the executor set)}
                     from the matrix, which writes every record
    resolved        (ok records) what the cell resolved to: model_path, peft_config,
                     precision, data_fingerprint: {train, val, test} hashes of the token ids
                     and labels used, ...
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
TEMP_SUFFIX = ".tmp"


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
    A process killed mid-write leaves only a `.<cell id>.*.tmp` file, which readers never match
    and `remove_temp_files` clears.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=TEMP_SUFFIX)
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
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk (power loss, not kill -9).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself already happened
    finally:
        os.close(fd)


def temp_files(results_dir: Path, cell_id: str) -> list[Path]:
    """Leftovers of interrupted writes of one cell's record."""
    return sorted(records_dir(results_dir).glob(f".{cell_id}.*{TEMP_SUFFIX}"))


def remove_temp_files(results_dir: Path, cell_id: str) -> int:
    """Delete a cell's leftover temporary files; only safe while holding the cell's lock,
    since another process's write in progress looks the same."""
    removed = 0
    for path in temp_files(results_dir, cell_id):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None (with a warning) for a file that is not a peft-arena record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"Skipping {path}: not readable JSON ({exc}).", stacklevel=2)
        return None
    if (not isinstance(data, dict) or not isinstance(data.get("schema_version"), int)
            or "spec" not in data):
        warnings.warn(f"Skipping {path}: not a peft-arena record.", stacklevel=2)
        return None
    if data["schema_version"] > SCHEMA_VERSION:
        warnings.warn(
            f"Skipping {path}: schema {data['schema_version']} is newer than this peft-arena "
            f"({SCHEMA_VERSION}); upgrade peft-arena to read it.",
            stacklevel=2,
        )
        return None
    if data.get("cell_id", path.stem) != path.stem:
        # A copied or renamed file would count its cell twice.
        warnings.warn(f"Skipping {path}: it holds cell {data['cell_id']!r}, not {path.stem!r} "
                      f"(a copy?); remove it.", stacklevel=2)
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
