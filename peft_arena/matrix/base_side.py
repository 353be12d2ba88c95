"""The retention figures' base side, filled once per run before any cell starts.

Every cell compares its tuned model with the untouched base model on the probe set
(measure.retention). The base's half is the same for every strategy and seed of a model and
task, so the matrix computes each distinct one here, in a process of its own
(`python -m peft_arena.cell.retention_base`), before it hands the cells to the executor: it
lands in the cache that cells and later runs share, and no cell's time holds it. Its own
time goes into the run's result (`MatrixResult.base_side`), the run's summary line and a side
record, RESULTS/retention_base.jsonl (one line per run that computed or checked entries).

A failure here costs nothing but time: the cells then compute the base side themselves, under
the same lock, as before. Cells on workers that do not share this machine's cache
($PEFT_ARENA_CACHE) do the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_arena.config.spec import CellSpec
from peft_arena.records.builders import utc_now

SIDE_RECORD = "retention_base.jsonl"


@dataclass
class BaseSideRun:
    """What filling the base side cost this run."""

    entries: list[dict[str, Any]] = field(default_factory=list)  # one per distinct base side
    seconds: float = 0.0  # the whole step: the process, its imports, probe sets, base sides
    error: str | None = None  # why the step failed (the cells then compute it themselves)

    @property
    def computed(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if not e.get("cache_hit")]

    def summary(self) -> str | None:
        """One line for the run's summary, or None when there was nothing to do."""
        if self.error:
            return f"retention base side not prepared ({self.error}); cells computed it"
        if not self.entries:
            return None
        computed = self.computed
        own = sum(e.get("seconds") or 0.0 for e in computed)
        return (f"retention base side: {len(computed)} computed ({own:.1f} s), "
                f"{len(self.entries) - len(computed)} cached; {self.seconds:.1f} s before "
                "the cells, in none of their times")


def _jobs(cells: list[CellSpec], data_dir: Path | None, trust_remote_code: bool
          ) -> list[dict[str, Any]]:
    """One job per distinct (model, task, length, precision, strategy) among cells that
    measure retention; the process folds those that share an entry."""
    seen: set[tuple] = set()
    jobs = []
    for spec in cells:
        key = (spec.model, spec.task_source, spec.max_length, spec.precision, spec.strategy)
        if not spec.measure_retention or key in seen:
            continue
        seen.add(key)
        jobs.append({"spec": spec.to_dict(), "trust_remote_code": trust_remote_code,
                     "data_dir": str(Path(data_dir).resolve()) if data_dir else None})
    return jobs


def prepare_base_sides(cells: list[CellSpec], results: Path, data_dir: Path | None, *,
                       trust_remote_code: bool = False) -> BaseSideRun:
    """Fill the base side of `cells` (those about to run) in a process of its own."""
    run = BaseSideRun()
    jobs = _jobs(cells, data_dir, trust_remote_code)
    if not jobs:
        return run
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peft-arena-base-") as folder:
        jobs_file, out_file = Path(folder) / "jobs.json", Path(folder) / "out.json"
        jobs_file.write_text(json.dumps(jobs), encoding="utf-8")
        # A process of its own: the matrix never loads a model (nor a GPU context) itself.
        done = subprocess.run([sys.executable, "-m", "peft_arena.cell.retention_base",
                               str(jobs_file), str(out_file)], env=os.environ.copy(),
                              capture_output=True, text=True)
        run.seconds = time.perf_counter() - started
        if done.returncode != 0 or not out_file.is_file():
            lines = (done.stderr or "").strip().splitlines()
            run.error = (lines[-1] if lines else f"exit status {done.returncode}")[:300]
        else:
            run.entries = json.loads(out_file.read_text(encoding="utf-8"))
    _append_side_record(results, run)
    return run


def _append_side_record(results: Path, run: BaseSideRun) -> None:
    line = json.dumps({"at": utc_now(), "seconds": run.seconds, "error": run.error,
                       "entries": run.entries})
    results.mkdir(parents=True, exist_ok=True)
    # One short line appended whole: runs sharing the folder never interleave within one.
    with open(results / SIDE_RECORD, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
