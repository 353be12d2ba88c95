"""What every executor shares: the job a cell becomes, how its process is started and read
back, and the small interface the matrix drives.

    executor.submit(job) -> future; future.done(); future.result() -> CellReturn

The matrix plans cells, holds their locks, and writes every record itself from what a future
returns, so an executor never touches the results folder: a Ray worker or a Slurm node needs
no shared filesystem for the records. Wherever it runs, a cell runs as a process of its own
(`python -m peft_arena.matrix.cell_process`, or N of them under torchrun for a cell over N
devices), so its peak memory is its own and its crash is only its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from peft_arena.records.store import read_record

# Exit status of a cell's process that saw Ctrl-C and wrote nothing (cell_process.main).
INTERRUPTED_CODES = (130, -signal.SIGINT)
SPEC_SUFFIX = ".spec.json"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True)
class CellJob:
    """Everything a cell's process needs, as plain data that pickles to any worker."""

    spec: dict[str, Any]  # CellSpec.to_dict()
    cell_id: str
    run_id: str
    data_dir: str = ""  # must be a path the worker can read (or empty: the Hub)
    results_dir: str = ""  # where --save-model and trackers write, on the worker
    trust_remote_code: bool = False
    processes: int = 1  # devices_per_cell: ranks launched under torchrun
    env: dict[str, str] = field(default_factory=dict)  # thread counts, CUDA_VISIBLE_DEVICES

    @property
    def threads(self) -> int | None:
        value = self.env.get("OMP_NUM_THREADS")
        return int(value) if value else None


@dataclass
class CellReturn:
    """What comes back from a cell, wherever it ran."""

    code: int | None  # exit status of the cell's process (None: the executor lost it)
    record: dict[str, Any] | None  # what the cell wrote, ok or failed; None if nothing
    worker: str = ""  # host:pid (and Ray node or Slurm job) that ran it
    lost: str | None = None  # why the executor lost the cell (a worker died, a job cancelled)
    attempts: int = 1

    @property
    def interrupted(self) -> bool:
        return self.record is None and self.lost is None and self.code in INTERRUPTED_CODES


class CellFuture(Protocol):
    def done(self) -> bool: ...

    def result(self) -> CellReturn: ...

    def cancel(self) -> None: ...


class Executor(Protocol):
    name: str

    def capacity(self) -> int:
        """How many cells may be in flight at once."""
        ...

    def prepare(self, job: CellJob) -> CellJob:
        """The job with what this executor adds (devices, threads)."""
        ...

    def submit(self, job: CellJob) -> CellFuture: ...

    def flush(self) -> None:
        """Send what submit may have queued (Slurm submits a batch as one job array)."""
        ...

    def released(self, job: CellJob) -> None:
        """The job's cell is finished or abandoned: its devices are free again."""
        ...

    def details(self) -> dict[str, Any]:
        """What the record's `execution` section says about this executor."""
        ...

    def close(self) -> None: ...


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _command(job: CellJob, workdir: Path, parent_pid: int) -> list[str]:
    cell = ["-m", "peft_arena.matrix.cell_process", str(spec_file(workdir, job.cell_id)),
            str(record_file(workdir, job.cell_id)), job.data_dir, "--run-id", job.run_id]
    if job.results_dir:
        cell += ["--results-dir", job.results_dir]
    if job.trust_remote_code:
        cell.append("--trust-remote-code")
    if job.processes > 1:
        # torchrun (what Accelerate's multi-GPU launcher runs) starts one process per rank;
        # `accelerate launch --cpu --num_processes N` would start only one on a CPU.
        # Each rank dies with torchrun, and torchrun with this process (see start_cell).
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={job.processes}", *cell, "--parent-pid", "-1"]
    return [sys.executable, *cell, "--parent-pid", str(parent_pid)]


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when its parent dies (Linux), as cells do."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spec_file(workdir: Path, cell_id: str) -> Path:
    return workdir / f"{cell_id}{SPEC_SUFFIX}"


def record_file(workdir: Path, cell_id: str) -> Path:
    # Named as in the results folder: a record read back must match its file name.
    return workdir / f"{cell_id}.json"


def start_cell(job: CellJob, workdir: Path, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start the cell's process; it writes its record into `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    record_file(workdir, job.cell_id).unlink(missing_ok=True)
    spec_file(workdir, job.cell_id).write_text(json.dumps(job.spec), encoding="utf-8")
    env = {**os.environ, **job.env}
    return subprocess.Popen(_command(job, workdir, os.getpid()), env=env, pass_fds=pass_fds,
                            preexec_fn=_die_with_parent if job.processes > 1 else None)


def read_cell(workdir: Path, cell_id: str, code: int, **extra: Any) -> CellReturn:
    """What a finished cell left in its work folder, then the folder is removed."""
    path = record_file(workdir, cell_id)
    record = read_record(path) if path.exists() else None
    shutil.rmtree(workdir, ignore_errors=True)
    return CellReturn(code=code, record=record, **extra)


def run_cell_here(job: CellJob, workdir: Path) -> CellReturn:
    """Start the cell, wait for it and read it back: the body of a Ray task or Slurm job."""
    process = start_cell(job, workdir)
    try:
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return read_cell(workdir, job.cell_id, code, worker=worker_name())
