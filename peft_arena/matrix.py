"""Run a list of cells, each in its own process, skipping cells that already have a record.

A process per cell keeps each cell's peak memory its own and keeps one cell's crash (out of
memory, a NaN, a segfault in a kernel) from ending the matrix. A lock file per cell stops two
runs on the same results folder from running the same cell at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_arena.data import load_task_data, resolve_data_dir
from peft_arena.errors import UserError
from peft_arena.runner import failed_record
from peft_arena.spec import CellSpec
from peft_arena.store import read_record, record_path, records_dir, write_record
from peft_arena.tasks import resolve_task


@dataclass
class CellOutcome:
    spec: CellSpec
    status: str  # ok | failed | skipped | busy
    record: dict[str, Any] | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class MatrixResult:
    outcomes: list[CellOutcome] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count("failed")


Event = Callable[[str, int, int, CellOutcome], None]


def preflight(cells: list[CellSpec], data_dir: str | Path | None) -> None:
    """Load each task's data once before any training, so a bad file fails the command at
    once, in one line, instead of failing every cell of that task."""
    seen: set[str] = set()
    folder = resolve_data_dir(data_dir)
    for spec in cells:
        if spec.task in seen:
            continue
        seen.add(spec.task)
        load_task_data(resolve_task(spec.task_file or spec.task), folder,
                       val_fraction=spec.val_fraction, max_train_samples=spec.max_train_samples,
                       max_eval_samples=spec.max_eval_samples, seed=spec.data_seed)


@contextmanager
def cell_lock(results_dir: Path, cell_id: str) -> Iterator[bool]:
    """Yields True when this process holds the cell; the OS drops the lock if we die."""
    lock_dir = records_dir(results_dir) / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{cell_id}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _existing(path: Path) -> dict[str, Any] | None:
    return read_record(path) if path.exists() else None


def _should_skip(record: dict[str, Any] | None, retry_failed: bool) -> bool:
    if record is None:
        return False
    return record.get("status") == "ok" or not retry_failed


def _run_process(spec: CellSpec, path: Path, data_dir: Path | None) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec.to_dict(), handle)
    try:
        command = [sys.executable, "-m", "peft_arena.cell", handle.name, str(path),
                   str(data_dir or "")]
        return subprocess.run(command, check=False).returncode
    finally:
        os.unlink(handle.name)


def run_one(spec: CellSpec, results_dir: Path, data_dir: Path | None,
            retry_failed: bool) -> CellOutcome:
    path = record_path(results_dir, spec.cell_id)
    existing = _existing(path)
    if _should_skip(existing, retry_failed):
        return CellOutcome(spec, "skipped", existing, message="already recorded")
    with cell_lock(results_dir, spec.cell_id) as held:
        if not held:
            return CellOutcome(spec, "busy", message="another run is running this cell")
        existing = _existing(path)  # it may have finished while we waited for the lock
        if _should_skip(existing, retry_failed):
            return CellOutcome(spec, "skipped", existing, message="already recorded")
        before = path.stat().st_mtime_ns if path.exists() else None
        began = time.perf_counter()
        code = _run_process(spec, path, data_dir)
        seconds = time.perf_counter() - began
        if code < 0 or (path.stat().st_mtime_ns if path.exists() else None) == before:
            # The process died without writing (killed, out of memory, segfault).
            crash = RuntimeError(f"cell process exited with status {code} and wrote no record")
            write_record(path, failed_record(spec, crash, "process"))
        if code == -2 or code == 130:  # the cell saw Ctrl-C
            raise KeyboardInterrupt
        record = read_record(path)
        status = record.get("status", "failed") if record else "failed"
        message = "" if status == "ok" else (record or {}).get("error", {}).get("message", "")
        return CellOutcome(spec, status, record, seconds, message)


def run_matrix(cells: list[CellSpec], results_dir: str | Path, data_dir: str | Path | None = None,
               *, retry_failed: bool = False, on_event: Event | None = None) -> MatrixResult:
    if not cells:
        raise UserError("The matrix is empty: name at least one task and strategy.")
    results = Path(results_dir)
    folder = resolve_data_dir(data_dir)
    preflight(cells, folder)
    outcome_list = MatrixResult()
    for index, spec in enumerate(cells, start=1):
        placeholder = CellOutcome(spec, "running")
        if on_event:
            on_event("start", index, len(cells), placeholder)
        try:
            outcome = run_one(spec, results, folder, retry_failed)
        except KeyboardInterrupt:
            outcome_list.interrupted = True
            break
        outcome_list.outcomes.append(outcome)
        if on_event:
            on_event("end", index, len(cells), outcome)
    return outcome_list
