"""Cells as processes on this machine, up to `workers` at once.

With GPUs each running cell gets `devices_per_cell` GPUs of its own through
CUDA_VISIBLE_DEVICES; two cells never share a GPU. On CPU the cores are split: each cell's
math libraries get cores // (workers x devices_per_cell) threads, and the record says how many
it had. With one worker nothing is split, as a single cell always ran.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.matrix.executors.base import CellJob, CellReturn, read_cell, start_cell, worker_name

# After Ctrl-C, how long a cell may take to stop on its own before it is killed.
STOP_GRACE_S = 10.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    import torch  # device_count reads NVML; it does not start CUDA in this process

    return torch.cuda.device_count()


def stop_process(process: subprocess.Popen) -> None:
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


@dataclass
class LocalFuture:
    process: subprocess.Popen
    workdir: Path
    cell_id: str

    def done(self) -> bool:
        return self.process.poll() is not None

    def result(self) -> CellReturn:
        code = self.process.wait()
        return read_cell(self.workdir, self.cell_id, code,
                         worker=f"{worker_name()}>{self.process.pid}")

    def cancel(self) -> None:
        stop_process(self.process)


@dataclass
class LocalExecutor:
    """`workers` cells at once on this machine; `work_root` holds each running cell's spec
    and record until the matrix has read them (beside the cell locks, swept with them)."""

    work_root: Path
    workers: int = 1
    devices_per_cell: int = 1
    name: str = "local"
    _gpus: int = 0
    _free_gpus: list[str] = field(default_factory=list)
    _lock_fds: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: give 1 or more cells to run at once.")
        self._gpus = gpu_count()
        if self._gpus:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(self._gpus)]
            self._free_gpus = ids[:self._gpus]
            needed = self.workers * self.devices_per_cell
            if needed > self._gpus:
                raise UserError(
                    f"--workers {self.workers} x devices_per_cell {self.devices_per_cell} needs "
                    f"{needed} GPUs; this machine has {self._gpus}. Lower one of them.")
        elif self.devices_per_cell > cpu_cores():
            raise UserError(
                f"devices_per_cell={self.devices_per_cell} is more than the {cpu_cores()} CPU "
                f"cores here; give at most {cpu_cores()}.")

    def capacity(self) -> int:
        return self.workers

    def threads_per_cell(self) -> int | None:
        if self._gpus or (self.workers == 1 and self.devices_per_cell == 1):
            return None  # the libraries' own choice, as a cell alone always had
        return max(1, cpu_cores() // (self.workers * self.devices_per_cell))

    def hold_lock(self, cell_id: str, lock_fd: int) -> None:
        """The cell inherits its lock: if the matrix dies where the cell cannot follow it,
        a rerun still finds the cell busy, not free."""
        self._lock_fds[cell_id] = lock_fd

    def prepare(self, job: CellJob) -> CellJob:
        env = dict(job.env)
        if self._gpus:
            taken, self._free_gpus = (self._free_gpus[:job.processes],
                                      self._free_gpus[job.processes:])
            env["CUDA_VISIBLE_DEVICES"] = ",".join(taken)
        elif (threads := self.threads_per_cell()) is not None:
            env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
        return replace(job, env=env)

    def submit(self, job: CellJob) -> LocalFuture:
        workdir = self.work_root / f"{job.cell_id}.work"
        lock_fd = self._lock_fds.pop(job.cell_id, None)
        fds = (lock_fd,) if lock_fd is not None else ()
        return LocalFuture(start_cell(job, workdir, fds), workdir, job.cell_id)

    def flush(self) -> None:
        pass  # submit started the cell already

    def released(self, job: CellJob) -> None:
        devices = job.env.get("CUDA_VISIBLE_DEVICES")
        if self._gpus and devices:
            self._free_gpus.extend(devices.split(","))

    def details(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}

    def close(self) -> None:
        pass
