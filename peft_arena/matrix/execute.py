"""Run a list of cells, each in its own process, skipping cells that already have a record.

The matrix hands each cell to an executor (executors/: local processes, Ray tasks or Slurm
jobs), collects what comes back and writes every record itself. A process per cell keeps
each cell's peak memory its own and keeps one cell's crash (out of memory, a NaN, a segfault
in a kernel) from ending the matrix. A lock file per cell, held by the matrix while the cell
runs, stops two runs on the same results folder from running the same cell at once.

What survives what:
- the matrix process killed (even by SIGKILL): its local cells die with it, finished cells
  keep their records, and the same command again runs the cells that have none (Slurm jobs
  keep running and are picked up again, see executors/slurm.py);
- a cell's process killed or crashed, or the worker that ran it lost: the matrix writes a
  failed record and goes on;
- Ctrl-C: the running cells are stopped and leave no record, so a rerun runs them again.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import secrets
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import PLACEHOLDER, resolve_task
from peft_arena.data.loading import load_cell_data, resolve_data_dir
from peft_arena.generation.data import load_text_task
from peft_arena.generation.models import check_generative
from peft_arena.generation.prompts import PromptFormat, check_format
from peft_arena.matrix.base_side import BaseSideRun, prepare_base_sides
from peft_arena.matrix.executors import (
    CellFuture,
    CellJob,
    CellReturn,
    Executor,
    ExecutorSettings,
    make_executor,
)
from peft_arena.measure.hardware_identity import machine_here, machine_of
from peft_arena.measure.provenance import environment
from peft_arena.model.heads import load_config
from peft_arena.model.loading import check_model, load_tokenizer
from peft_arena.records.builders import error_section, failed_record
from peft_arena.records.schema import Record
from peft_arena.records.store import (
    TEMP_SUFFIX,
    read_record,
    record_path,
    records_dir,
    remove_temp_files,
    write_record,
)

LOCKS_SUBDIR = ".locks"
SPEC_SUFFIX = ".spec.json"  # left by earlier versions, which kept a cell's spec here
WORK_SUFFIX = ".work"  # a local cell's spec and record until the matrix has read them
# How often the matrix looks at the cells in flight.
POLL_S = 0.2


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
    # Recorded cells skipped although their record was made on another machine than this.
    other_hardware: dict[str, int] = field(default_factory=dict)  # machine -> cells
    search: Any = None  # with --tune-trials: the equal-budget search (matrix.search)
    # The retention figures' base side, filled before the cells (matrix.base_side).
    base_side: BaseSideRun = field(default_factory=BaseSideRun)

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


def preflight(cells: list[CellSpec], data_dir: str | Path | None, *,
              trust_remote_code: bool = False) -> None:
    """Load each task's data and check each model once before any training, so a bad file or
    a model no cell could train fails the command at once, in one line, instead of failing
    every cell of that task or model."""
    kinds = {spec.task_source: resolve_task(spec.task_source) for spec in cells}
    for model, checkpointing in sorted({(c.model, c.gradient_checkpointing) for c in cells}):
        tasks = {kinds[c.task_source] for c in cells if c.model == model}
        check_model(model, gradient_checkpointing=checkpointing,
                    trust_remote_code=trust_remote_code,
                    classification=any(not task.is_generation for task in tasks))
        for task in sorted((t for t in tasks if t.is_generation), key=lambda t: t.name):
            check_generative(model, load_config(model, trust_remote_code=trust_remote_code),
                             task.name)
    # The data settings decide which rows are bad enough to stop the run: (label names, chat
    # messages or not) per task and settings.
    loaded: dict[tuple, tuple[list[str], bool]] = {}
    folder = resolve_data_dir(data_dir)
    checked: set[tuple[str, str]] = set()
    for spec in cells:
        task = kinds[spec.task_source]
        key = (spec.task_source, spec.on_bad_rows, spec.drop_test_leaks)
        if key not in loaded:
            if task.answers_text:
                text = load_text_task(task, val_fraction=spec.val_fraction,
                                      max_train_samples=spec.max_train_samples,
                                      max_eval_samples=spec.max_eval_samples,
                                      seed=spec.data_seed)
                loaded[key] = ([], text.chat_form)
            else:
                loaded[key] = (load_cell_data(spec, folder).label_names, False)
        if task.is_generation and (spec.model, spec.task_source) not in checked:
            checked.add((spec.model, spec.task_source))
            names, chat_form = loaded[key]
            check_format(PromptFormat(task.prompt or PLACEHOLDER, task.system,
                                      task.chat_template),
                         load_tokenizer(spec.model, trust_remote_code=trust_remote_code),
                         names, chat_form=chat_form)


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
    for suffix in (SPEC_SUFFIX, WORK_SUFFIX):
        for path in _lock_dir(results_dir).glob(f"*{suffix}"):
            with cell_lock(results_dir, path.name.removesuffix(suffix)) as held:
                if held is not None and path.exists():
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                    removed += 1
    return removed


def _existing(path: Path) -> Record | None:
    return read_record(path) if path.exists() else None


def _should_skip(record: Record | None, retry_failed: bool) -> bool:
    if record is None:
        return False
    return record.get("status") == "ok" or not retry_failed


def _lost_record(spec: CellSpec, back: CellReturn, run_id: str) -> Record:
    """The failed record of a cell that came back without one of its own."""
    if back.lost is not None:
        what = back.lost
    elif back.code is not None and back.code < 0:
        name = signal.Signals(-back.code).name
        what = f"the cell's process was killed by {name}"
        if -back.code == signal.SIGKILL:
            what += " (by a user, or by the kernel when memory ran out)"
    else:
        what = f"the cell's process exited with status {back.code}"
    crash = CellCrashed(f"{what} before writing its record")
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


@dataclass
class _Running:
    """A cell handed to the executor, with the lock the matrix holds for it."""

    spec: CellSpec
    job: CellJob
    future: CellFuture
    lock: ExitStack
    began: float


@dataclass
class _Driver:
    """Starts cells on an executor and turns what comes back into records."""

    executor: Executor
    results: Path
    data_dir: Path | None
    retry_failed: bool
    run_id: str
    trust_remote_code: bool
    # Extra environment of a cell's process by cell id (a search trial names its study).
    cell_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def start(self, spec: CellSpec) -> CellOutcome | _Running:
        """The cell's outcome when it is not run (recorded, or busy in another run); else
        the cell, submitted under its lock."""
        path = record_path(self.results, spec.cell_id)
        if _should_skip(existing := _existing(path), self.retry_failed):
            return CellOutcome(spec, "skipped", existing, message="already recorded")
        lock = ExitStack()
        lock_fd = lock.enter_context(cell_lock(self.results, spec.cell_id))
        if lock_fd is None:
            lock.close()
            return CellOutcome(spec, "busy", message="another run is running this cell")
        if _should_skip(existing := _existing(path), self.retry_failed):
            lock.close()  # it finished while we waited for the lock
            return CellOutcome(spec, "skipped", existing, message="already recorded")
        # Absolute: a worker elsewhere starts in another folder.
        data_dir = str(Path(self.data_dir).resolve()) if self.data_dir else ""
        job = self.executor.prepare(CellJob(
            spec.to_dict(), spec.cell_id, self.run_id, data_dir,
            str(self.results.resolve()), self.trust_remote_code,
            processes=spec.devices_per_cell or 1))
        if extra := self.cell_env.get(spec.cell_id):
            job = dataclasses.replace(job, env={**job.env, **extra})
        try:
            if hasattr(self.executor, "hold_lock"):
                self.executor.hold_lock(spec.cell_id, lock_fd)
            future = self.executor.submit(job)
        except BaseException:
            self.executor.released(job)
            lock.close()
            raise
        return _Running(spec, job, future, lock, time.perf_counter())

    def finish(self, cell: _Running) -> CellOutcome:
        """Write the record of a cell that came back. Raises KeyboardInterrupt when the cell
        alone saw Ctrl-C (it leaves no record and runs again on resume)."""
        try:
            back = cell.future.result()
            seconds = time.perf_counter() - cell.began
            # A cell stopped mid-write leaves a temporary file, never a partial record.
            remove_temp_files(self.results, cell.spec.cell_id)
            if back.interrupted:
                raise KeyboardInterrupt
            record = back.record or _lost_record(cell.spec, back, self.run_id)
            record["execution"] = {**(record.get("execution") or {}),
                                   **self.executor.details(), "worker": back.worker,
                                   "attempts": back.attempts, "environment": cell.job.env}
            write_record(record_path(self.results, cell.spec.cell_id), record)
            return _outcome(cell.spec, record, seconds)
        finally:
            self.executor.released(cell.job)
            cell.lock.close()

    def abandon(self, cell: _Running) -> None:
        """After Ctrl-C: stop the cell; it leaves no record."""
        try:
            cell.future.cancel()
            remove_temp_files(self.results, cell.spec.cell_id)
        finally:
            self.executor.released(cell.job)
            cell.lock.close()


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


def _devices_per_cell(cells: list[CellSpec]) -> int:
    """The most devices any cell asks for; batch sizes must split evenly over them."""
    for spec in cells:
        devices = spec.devices_per_cell or 1
        for name in ("batch_size", "eval_batch_size"):
            if getattr(spec, name) % devices:
                raise UserError(
                    f"{spec.task}/{spec.strategy}: {name}={getattr(spec, name)} does not split "
                    f"over devices_per_cell={devices}; batch sizes are global (split over the "
                    f"devices), so give a multiple of {devices}.")
    return max(spec.devices_per_cell or 1 for spec in cells)


def _recorded_elsewhere(cells: list[CellSpec], results: Path) -> dict[str, int]:
    """machine -> how many of these cells have a record made on another machine than this
    one (only a local run can tell: elsewhere the workers are not this machine)."""
    here, counts = machine_here(), {}
    for spec in cells:
        record = _existing(record_path(results, spec.cell_id))
        machine = machine_of(record) if record and record.get("status") == "ok" else None
        if machine and machine != here:
            counts[machine] = counts.get(machine, 0) + 1
    return counts


def run_matrix(cells: list[CellSpec], results_dir: str | Path, data_dir: str | Path | None = None,
               *, retry_failed: bool = False, on_event: Event | None = None,
               trust_remote_code: bool = False, max_trainable_params: int | None = None,
               executor: ExecutorSettings | None = None,
               cell_env: dict[str, dict[str, str]] | None = None) -> MatrixResult:
    """Run every cell that has no record (or a failed one, with `retry_failed`).

    `executor` says where cells run (default: one at a time, locally). Cells with more than
    `max_trainable_params` trainable parameters are counted before any training and reported
    with status "over_budget"; they write no record. A cell recorded on other hardware is
    skipped like any recorded cell (a folder a cluster filled mixes machines by design);
    `other_hardware` counts them, so that the caller can point to a folder of one's own.
    Ctrl-C ends the run early with `interrupted` set; the cells it finished are kept.
    `cell_env`: extra environment variables for the process of the cells it names.
    """
    cells = _distinct(cells)
    if not cells:
        raise UserError("The matrix is empty: name at least one task and strategy.")
    settings = executor or ExecutorSettings()
    devices = _devices_per_cell(cells)
    results = Path(results_dir)
    folder = resolve_data_dir(data_dir)
    preflight(cells, folder, trust_remote_code=trust_remote_code)
    over_budget = _over_budget(cells, max_trainable_params, folder)
    runner = make_executor(settings, _lock_dir(results), devices)
    _lock_dir(results).mkdir(parents=True, exist_ok=True)
    result = MatrixResult(run_id=new_run_id(), planned=len(cells))
    if settings.name == "local":
        result.other_hardware = _recorded_elsewhere(cells, results)
    sweep_temp_files(results)
    driver = _Driver(runner, results, folder, retry_failed, result.run_id, trust_remote_code,
                     cell_env or {})
    pending = deque(enumerate(cells, start=1))
    running: dict[int, _Running] = {}

    def report(kind: str, index: int, outcome: CellOutcome) -> None:
        if on_event:
            on_event(kind, index, len(cells), outcome)

    def finished(index: int, outcome: CellOutcome) -> None:
        result.outcomes.append(outcome)
        report("end", index, outcome)

    try:
        # Before any cell starts, so that none of them pays for it (matrix.base_side).
        result.base_side = prepare_base_sides(
            [spec for spec in cells if spec.cell_id not in over_budget and not _should_skip(
                _existing(record_path(results, spec.cell_id)), retry_failed)],
            results, folder, trust_remote_code=trust_remote_code)
        while pending or running:
            while pending and len(running) < runner.capacity():
                index, spec = pending.popleft()
                report("start", index, CellOutcome(spec, "running"))
                if spec.cell_id in over_budget:
                    finished(index, CellOutcome(spec, "over_budget",
                                                message=over_budget[spec.cell_id]))
                    continue
                started = driver.start(spec)
                if isinstance(started, CellOutcome):
                    finished(index, started)
                else:
                    running[index] = started
            runner.flush()
            done = [index for index, cell in running.items() if cell.future.done()]
            for index in done:
                finished(index, driver.finish(running.pop(index)))
            if running and not done:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        result.interrupted = True
        for cell in running.values():
            driver.abandon(cell)
    finally:
        runner.close()
    return result
