"""Run a list of cells, each in its own process, skipping cells that already have a record.

A process per cell keeps each cell's peak memory its own and keeps one cell's crash (out of
memory, a NaN, a segfault in a kernel) from ending the matrix. A lock file per cell stops two
runs on the same results folder from running the same cell at once.

What survives what:
- the matrix process killed (even by SIGKILL): its running cell dies with it, finished cells
  keep their records, and the same command again runs the cells that have none;
- a cell's process killed or crashed: the matrix writes a failed record and goes on;
- Ctrl-C: the running cell is stopped and leaves no record, so a rerun runs it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from peft_arena.cell.data import load_cell_data, resolve_data_dir
from peft_arena.config.spec import CellSpec
from peft_arena.errors import UserError
from peft_arena.measure.provenance import environment
from peft_arena.records.builders import error_section, failed_record
from peft_arena.records.schema import Record
from peft_arena.records.store import (
    TEMP_SUFFIX,
    read_record,
    record_path,
    records_dir,
    remove_temp_files,
    results_dir_of,
    write_record,
)

LOCKS_SUBDIR = ".locks"
SPEC_SUFFIX = ".spec.json"
# After Ctrl-C, how long a cell may take to stop on its own before it is killed.
STOP_GRACE_S = 10.0


class CellCrashed(RuntimeError):
    """A cell's process ended without writing its record (killed, out of memory, segfault)."""


@dataclass
class CellOutcome:
    spec: CellSpec
    status: str  # ok | failed | skipped | busy | over_budget
    record: Record | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class MatrixResult:
    outcomes: list[CellOutcome] = field(default_factory=list)
    interrupted: bool = False
    run_id: str = ""
    planned: int = 0  # distinct cells asked for

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        """Cells whose record says failed: failed in this run, or before and not retried."""
        return self.count("failed") + self.skipped_failed

    @property
    def skipped_failed(self) -> int:
        return sum(o.status == "skipped" and (o.record or {}).get("status") != "ok"
                   for o in self.outcomes)

    @property
    def not_reached(self) -> int:
        """Cells this run never got to (after Ctrl-C)."""
        return self.planned - len(self.outcomes)


Event = Callable[[str, int, int, CellOutcome], None]


def new_run_id() -> str:
    """Names one matrix run in the records it writes: the process id, then random bits."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def preflight(cells: list[CellSpec], data_dir: str | Path | None) -> None:
    """Load each task's data once before any training, so a bad file fails the command at
    once, in one line, instead of failing every cell of that task."""
    seen: set[tuple] = set()
    folder = resolve_data_dir(data_dir)
    for spec in cells:
        # The data settings decide which rows are bad enough to stop the run.
        key = (spec.task_source, spec.on_bad_rows, spec.drop_test_leaks)
        if key in seen:
            continue
        seen.add(key)
        load_cell_data(spec, folder)


def _lock_dir(results_dir: Path) -> Path:
    return records_dir(results_dir) / LOCKS_SUBDIR


@contextmanager
def cell_lock(results_dir: Path, cell_id: str) -> Iterator[int | None]:
    """Yields the file descriptor of the cell's lock when this process holds it, else None.

    The OS drops the lock when every process holding the descriptor has ended, whatever
    killed it, so a lock is never left stale.
    """
    lock_dir = _lock_dir(results_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{cell_id}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield handle.fileno()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_temp_files(results_dir: Path) -> int:
    """Delete what killed runs left behind (half-written records, cell spec files), for
    cells that no running process holds."""
    removed = 0
    for path in records_dir(results_dir).glob(f".*{TEMP_SUFFIX}"):
        # ".<cell id>.<random>.tmp": the random part never holds a dot, a cell id may.
        cell_id = path.name[1:-len(TEMP_SUFFIX)].rsplit(".", 1)[0]
        with cell_lock(results_dir, cell_id) as held:
            if held is not None:
                removed += remove_temp_files(results_dir, cell_id)
    for path in _lock_dir(results_dir).glob(f"*{SPEC_SUFFIX}"):
        with cell_lock(results_dir, path.name.removesuffix(SPEC_SUFFIX)) as held:
            if held is not None and path.exists():
                path.unlink()
                removed += 1
    return removed


def _existing(path: Path) -> Record | None:
    return read_record(path) if path.exists() else None


def _should_skip(record: Record | None, retry_failed: bool) -> bool:
    if record is None:
        return False
    return record.get("status") == "ok" or not retry_failed


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """Changes whenever the record is replaced (a rename brings a new inode)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _stop(process: subprocess.Popen) -> None:
    """After Ctrl-C: let the cell stop on its own Ctrl-C (a terminal sends it to the whole
    process group), send one if only the matrix got it, and kill it if it takes too long."""
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=STOP_GRACE_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):  # too slow, or a second Ctrl-C
        process.kill()
        process.wait()


def _wait(process: subprocess.Popen) -> int:
    try:
        return process.wait()
    except KeyboardInterrupt:
        _stop(process)
        raise


def _run_process(spec: CellSpec, path: Path, data_dir: Path | None, lock_fd: int,
                 run_id: str, trust_remote_code: bool) -> int:
    # Beside the lock, under the lock: one file per cell, never left behind in /tmp.
    spec_file = _lock_dir(results_dir_of(path)) / f"{spec.cell_id}{SPEC_SUFFIX}"
    spec_file.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    command = [sys.executable, "-m", "peft_arena.matrix.cell_process", str(spec_file), str(path),
               str(data_dir or ""), "--run-id", run_id, "--parent-pid", str(os.getpid())]
    if trust_remote_code:
        command.append("--trust-remote-code")
    # The cell inherits the lock: if the matrix dies where the cell cannot follow it (no
    # parent-death signal outside Linux), a rerun still finds the cell busy, not free.
    process = subprocess.Popen(command, pass_fds=(lock_fd,))
    try:
        return _wait(process)
    finally:
        spec_file.unlink(missing_ok=True)


def _crash_record(spec: CellSpec, code: int, run_id: str) -> Record:
    if code < 0:
        name = signal.Signals(-code).name
        how = f"was killed by {name}"
        if -code == signal.SIGKILL:
            how += " (by a user, or by the kernel when memory ran out)"
    else:
        how = f"exited with status {code}"
    crash = CellCrashed(f"the cell's process {how} before writing its record")
    return failed_record(
        # The matrix's own stack says nothing about the cell.
        spec, error_section(crash, "process", with_traceback=False),
        # Unknown: the matrix's memory is not the cell's, and the kernel's peak for a process
        # started from the matrix counts the matrix's own memory at that moment.
        memory={"peak_bytes": None, "source": None},
        environment=environment(spec.precision), run_id=run_id)


def _outcome(spec: CellSpec, record: Record | None, seconds: float) -> CellOutcome:
    status = record.get("status", "failed") if record else "failed"
    if status == "ok":
        return CellOutcome(spec, status, record, seconds)
    error = (record or {}).get("error") or {}
    message = f"{error.get('type', 'unknown error')} in {error.get('phase', '?')}: " \
              f"{error.get('message', '')}"
    return CellOutcome(spec, "failed", record, seconds, message)


def run_one(spec: CellSpec, results_dir: Path, data_dir: Path | None, retry_failed: bool, *,
            run_id: str = "", trust_remote_code: bool = False) -> CellOutcome:
    """Run one cell in its own process unless it is recorded or another run holds it.

    Raises KeyboardInterrupt after Ctrl-C, once the cell's process has ended.
    """
    run_id = run_id or new_run_id()
    path = record_path(results_dir, spec.cell_id)
    existing = _existing(path)
    if _should_skip(existing, retry_failed):
        return CellOutcome(spec, "skipped", existing, message="already recorded")
    with cell_lock(results_dir, spec.cell_id) as lock_fd:
        if lock_fd is None:
            return CellOutcome(spec, "busy", message="another run is running this cell")
        existing = _existing(path)  # it may have finished while we waited for the lock
        if _should_skip(existing, retry_failed):
            return CellOutcome(spec, "skipped", existing, message="already recorded")
        before = _file_identity(path)
        began = time.perf_counter()
        try:
            code = _run_process(spec, path, data_dir, lock_fd, run_id, trust_remote_code)
        finally:
            # A cell stopped mid-write leaves a temporary file, never a partial record.
            remove_temp_files(results_dir, spec.cell_id)
        seconds = time.perf_counter() - began
        written = _file_identity(path) != before
        if code in (130, -signal.SIGINT) and not written:
            raise KeyboardInterrupt  # the cell alone saw Ctrl-C; it runs again on resume
        if not written:  # died without a word: killed, out of memory, a segfault
            write_record(path, _crash_record(spec, code, run_id))
        return _outcome(spec, read_record(path), seconds)


def _distinct(cells: list[CellSpec]) -> list[CellSpec]:
    """The same cell named twice (`--seeds 0,0`) runs once."""
    by_id: dict[str, CellSpec] = {}
    for cell in cells:
        by_id.setdefault(cell.cell_id, cell)
    return list(by_id.values())


def _over_budget(cells: list[CellSpec], limit: int | None, data_dir: Path | None
                 ) -> dict[str, str]:
    """cell id -> why it is skipped, for the cells whose trainable parameters exceed `limit`."""
    if limit is None:
        return {}
    from peft_arena.matrix.budget import plan_parameters  # builds models on the meta device

    return {spec.cell_id: f"{count.trainable:,} trainable parameters > budget {limit:,}"
            for spec, count in zip(cells, plan_parameters(cells, data_dir), strict=True)
            if count.trainable > limit}


def run_matrix(cells: list[CellSpec], results_dir: str | Path, data_dir: str | Path | None = None,
               *, retry_failed: bool = False, on_event: Event | None = None,
               trust_remote_code: bool = False,
               max_trainable_params: int | None = None) -> MatrixResult:
    """Run every cell that has no record (or a failed one, with `retry_failed`).

    Cells with more than `max_trainable_params` trainable parameters are counted before any
    training and reported with status "over_budget"; they write no record.
    Ctrl-C ends the run early with `interrupted` set; the cells it finished are kept.
    """
    cells = _distinct(cells)
    if not cells:
        raise UserError("The matrix is empty: name at least one task and strategy.")
    results = Path(results_dir)
    folder = resolve_data_dir(data_dir)
    preflight(cells, folder)
    over_budget = _over_budget(cells, max_trainable_params, folder)
    result = MatrixResult(run_id=new_run_id(), planned=len(cells))
    sweep_temp_files(results)
    try:
        for index, spec in enumerate(cells, start=1):
            if on_event:
                on_event("start", index, len(cells), CellOutcome(spec, "running"))
            if spec.cell_id in over_budget:
                outcome = CellOutcome(spec, "over_budget", message=over_budget[spec.cell_id])
            else:
                outcome = run_one(spec, results, folder, retry_failed, run_id=result.run_id,
                                  trust_remote_code=trust_remote_code)
            result.outcomes.append(outcome)
            if on_event:
                on_event("end", index, len(cells), outcome)
    except KeyboardInterrupt:
        result.interrupted = True
    return result
