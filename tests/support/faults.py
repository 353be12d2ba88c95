"""Fault injection for the reliability tests; production code carries none of it.

    PEFT_ARENA_FAULT=KIND@PHASE[@TEXT][,KIND@PHASE[@TEXT]...]

fires KIND when a cell enters PHASE, in cells whose id contains TEXT (all cells without it).
PHASE is `start` (the cell's process has just started, before any library is loaded) or a
phase of the cell's timer: setup, data, tokenize, model, train, eval. KIND is one of `error`
(RuntimeError), `oom` (torch.OutOfMemoryError), `memory` (MemoryError), `kill` (SIGKILL to
itself, as the kernel's out-of-memory killer does) or `sleep` (wait an hour, to be killed or
interrupted). PEFT_ARENA_FAULT_LOG=FILE appends "KIND@PHASE CELL_ID PID" to FILE as a fault
fires.

In the test's own process `faulty_phase` gives a PhaseTimer.phase to patch in. Cell processes
that a matrix starts get it from `fault_env`, which puts inject/ first on PYTHONPATH: Python
then runs inject/sitecustomize.py at start-up, which calls `install_in_cell_process`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from peft_arena.common.errors import UserError
from peft_arena.measure.timing import PhaseTimer

FAULT_ENV = "PEFT_ARENA_FAULT"
FAULT_LOG_ENV = "PEFT_ARENA_FAULT_LOG"
FAULT_KINDS = ("error", "oom", "memory", "kill", "sleep")
FAULT_PHASES = ("start", "setup", "data", "tokenize", "model", "train", "eval")
INJECT_DIR = Path(__file__).resolve().parent / "inject"
REPO = Path(__file__).resolve().parents[2]
# How the matrix names a cell's spec file (matrix.execute.SPEC_SUFFIX); written out here, since
# importing the matrix would load half the libraries before the start faults fire.
SPEC_SUFFIX = ".spec.json"


@dataclass(frozen=True)
class Fault:
    kind: str
    phase: str
    cell_text: str = ""

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, _, rest = text.strip().partition("@")
        phase, _, cell_text = rest.partition("@")
        if kind not in FAULT_KINDS or phase not in FAULT_PHASES:
            raise UserError(
                f"{FAULT_ENV}: {text!r} is not KIND@PHASE[@CELL] with KIND one of "
                f"{', '.join(FAULT_KINDS)} and PHASE one of {', '.join(FAULT_PHASES)}."
            )
        return cls(kind, phase, cell_text)

    @classmethod
    def from_env(cls) -> list[Fault]:
        return [cls.parse(part) for part in os.environ.get(FAULT_ENV, "").split(",")
                if part.strip()]

    def fire(self, phase: str, cell_id: str) -> None:
        if phase != self.phase or self.cell_text not in cell_id:
            return
        log = os.environ.get(FAULT_LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{self.kind}@{phase} {cell_id} {os.getpid()}\n")
        message = f"injected by {FAULT_ENV} in phase {phase}"
        if self.kind == "error":
            raise RuntimeError(message)
        if self.kind == "memory":
            raise MemoryError(message)
        if self.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(message)
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "sleep":
            time.sleep(3600)


def faulty_phase(faults: list[Fault], cell_id: str) -> Callable:
    """PhaseTimer.phase, firing the faults of a phase on entering it."""
    original = PhaseTimer.phase

    @contextmanager
    def phase(self: PhaseTimer, name: str) -> Iterator[None]:
        with original(self, name):
            for fault in faults:
                fault.fire(name, cell_id)
            yield

    return phase


def fault_env(faults: str, log: Path | None = None) -> dict[str, str]:
    """Environment variables that make the cell processes of a matrix inject `faults`."""
    path = os.pathsep.join(filter(None, [str(INJECT_DIR), str(REPO),
                                         os.environ.get("PYTHONPATH", "")]))
    return {FAULT_ENV: faults, "PYTHONPATH": path,
            **({FAULT_LOG_ENV: str(log)} if log else {})}


def install_in_cell_process(argv: list[str]) -> None:
    """In a cell's process (`python -m peft_arena.matrix.cell_process SPEC RECORD ...`): fire
    the start faults now and the others as the cell's timer enters their phases. Any other
    process is left alone."""
    if len(argv) < 3 or not argv[1].endswith(SPEC_SUFFIX):
        return
    cell_id = Path(argv[2]).stem  # records are named after their cell
    try:
        faults = Fault.from_env()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        os._exit(UserError.exit_code)
    for fault in faults:
        fault.fire("start", cell_id)
    PhaseTimer.phase = faulty_phase(faults, cell_id)
