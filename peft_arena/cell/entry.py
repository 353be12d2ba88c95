"""The entry points of one cell: run it and return its record, run it and write its record
(ok or failed) as a cell's process does, or train and validate it only (a search trial).

Each picks the steps for the kind of the cell's task (runner.cell_class): `Cell` for
classification, `GenerativeCell` for generation.
"""

from __future__ import annotations

from pathlib import Path

from peft_arena.cell.runner import TrainingOutcome, cell_class
from peft_arena.config.spec import CellSpec
from peft_arena.measure.memory import memory_report
from peft_arena.measure.provenance import environment
from peft_arena.measure.timing import PhaseTimer
from peft_arena.records import builders
from peft_arena.records.schema import Record
from peft_arena.records.store import results_dir_of, write_record
from peft_arena.train import distributed, trackers
from peft_arena.train.loop import EvalCallback


def run_cell(spec: CellSpec, data_dir: str | Path | None = None,
             timer: PhaseTimer | None = None, *, results_dir: Path | None = None,
             on_evaluate: EvalCallback | None = None,
             trust_remote_code: bool = False) -> Record:
    """Run every step of one cell and return its ok record (see `Cell`)."""
    return cell_class(spec)(spec, data_dir, timer=timer, results_dir=results_dir,
                            on_evaluate=on_evaluate, trust_remote_code=trust_remote_code).run()


def train_cell(spec: CellSpec, data_dir: str | Path | None = None, *,
               on_evaluate: EvalCallback | None = None) -> TrainingOutcome:
    """Train and validate one cell, never touching its test split (a search trial)."""
    return cell_class(spec)(spec, data_dir, on_evaluate=on_evaluate).train_only()


def run_and_record(spec: CellSpec, record_file: Path, data_dir: str | Path | None, *,
                   timer: PhaseTimer | None = None, run_id: str | None = None,
                   trust_remote_code: bool = False, results_dir: Path | None = None,
                   on_evaluate: EvalCallback | None = None) -> None:
    """Run a cell and write its record, ok or failed; a failure is re-raised after recording.

    `run_id` names the matrix run in the record, so that two runs sharing a results folder
    can be told apart. `results_dir` is where saved models and tracker logs go (default: the
    results folder of `record_file`). Of a cell over several processes, rank 0 writes.
    """
    timer = timer or PhaseTimer()
    write = write_record if distributed.is_main_process() else (lambda *_: None)
    try:
        record = run_cell(spec, data_dir, timer,
                          results_dir=results_dir or results_dir_of(record_file),
                          trust_remote_code=trust_remote_code, on_evaluate=on_evaluate)
    except Exception as exc:  # any failure becomes a failed record; the matrix goes on
        trackers.end_failed(spec.tracker)
        write(record_file, builders.failed_record(
            spec, builders.error_section(exc, timer.current), memory=memory_report(None),
            environment=environment(spec.precision), run_id=run_id))
        raise
    write(record_file, {**record, "run_id": run_id})
