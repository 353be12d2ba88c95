"""Each cell a Slurm job, submitted through submitit; many cells go in as one job array.

The job runs the cell's own process on its node and returns the record, which the matrix
writes. A job that Slurm cancels or times out becomes a failed record with Slurm's reason.
The id of each cell's job is kept beside the cell's lock; a matrix killed and started again
picks up the jobs still running or finished for cells without a record instead of submitting
them twice, and submits only the others. submitit's folder (job scripts, logs, pickled
results) must be on a filesystem the nodes share, as Slurm's own logs are.

`cluster="local"` runs the same code path with local processes instead of sbatch (tests);
`cluster="debug"` runs jobs in this process.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.matrix.executors.base import CellJob, CellReturn, run_cell_here

# Cells submitted at once above this count go in as one job array.
ARRAY_FROM = 4
JOB_SUFFIX = ".slurm.json"
# Slurm job states after which no result will come.
ENDED_WITHOUT_RESULT = ("CANCELLED", "TIMEOUT", "FAILED", "NODE_FAIL", "PREEMPTED",
                        "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "INTERRUPTED")


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install "
                        "'peft-arena[slurm]'.") from None
    return submitit


def _cell_job(job: CellJob) -> CellReturn:
    with tempfile.TemporaryDirectory(prefix="peft-arena-cell-") as folder:
        return run_cell_here(job, Path(folder) / "work")


@dataclass
class SlurmSettings:
    """Slurm resources of every cell's job (flags or the preset's `executor:` section)."""

    partition: str | None = None
    time_min: int = 60
    # GPUs of each cell's job: none unless given (a cell over N GPUs needs N here).
    gpus_per_cell: int | None = None
    cpus_per_cell: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    array_parallelism: int = 64
    cluster: str | None = None  # None: Slurm; "local" or "debug" for tests

    def parameters(self, processes: int) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout_min": self.time_min, "nodes": 1,
                                  "tasks_per_node": 1,
                                  "slurm_array_parallelism": self.array_parallelism}
        optional = {"slurm_partition": self.partition, "mem_gb": self.mem_gb,
                    "cpus_per_task": self.cpus_per_cell or processes,
                    "slurm_account": self.account,
                    "gpus_per_node": self.gpus_per_cell}
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


@dataclass
class SlurmFuture:
    job: Any
    cell_id: str

    def done(self) -> bool:
        return bool(self.job.done())

    def result(self) -> CellReturn:
        submitit = _import_submitit()
        where = f"Slurm job {self.job.job_id}"
        try:
            back: CellReturn = self.job.result()
        except (submitit.core.utils.UncompletedJobError,
                submitit.core.utils.FailedJobError) as exc:
            state = self.job.state
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return CellReturn(code=None, record=None, worker=where,
                              lost=f"{where} ended {state} without a result: {detail}")
        back.worker = f"{back.worker} ({where})"
        return back

    def cancel(self) -> None:
        self.job.cancel(check=False)


@dataclass
class SlurmExecutor:
    folder: Path  # submitit's scripts, logs and results; must be shared with the nodes
    job_ids: Path  # one file per cell naming its job, beside the cell locks
    settings: SlurmSettings = field(default_factory=SlurmSettings)
    devices_per_cell: int = 1
    name: str = "slurm"
    _submitit: Any = None
    _executor: Any = None
    _queued: list[tuple[CellJob, SlurmFuture]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._submitit = _import_submitit()
        self._executor = self._submitit.AutoExecutor(folder=str(self.folder),
                                                     cluster=self.settings.cluster)
        self._executor.update_parameters(**self.settings.parameters(self.devices_per_cell))

    def capacity(self) -> int:
        return 1 << 30  # Slurm queues the jobs

    def prepare(self, job: CellJob) -> CellJob:
        return job

    def _job_file(self, cell_id: str) -> Path:
        return self.job_ids / f"{cell_id}{JOB_SUFFIX}"

    def _reattach(self, job: CellJob) -> Any | None:
        """The job a killed matrix left for this cell, if it still runs or left a result."""
        path = self._job_file(job.cell_id)
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("run_spec") != job.spec:
                return None  # another configuration's job: never mistake it for this cell
            previous = self._executor._executor.job_class(saved["folder"], saved["job_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if previous.paths.result_pickle.exists():
            return previous
        state = str(previous.state).upper()
        return previous if state.startswith(("RUNNING", "PENDING", "REQUEUED")) else None

    def submit(self, job: CellJob) -> SlurmFuture:
        previous = self._reattach(job)
        if previous is not None:
            return SlurmFuture(previous, job.cell_id)
        # Jobs are created when the batch is flushed (see flush); until then a placeholder.
        future = SlurmFuture(None, job.cell_id)
        self._queued.append((job, future))
        return future

    def flush(self) -> None:
        """Submit what `submit` queued: one job array for a large batch."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        if len(queued) >= ARRAY_FROM:
            with self._executor.batch():
                jobs = [self._executor.submit(_cell_job, job) for job, _ in queued]
        else:
            jobs = [self._executor.submit(_cell_job, job) for job, _ in queued]
        for (job, future), submitted in zip(queued, jobs, strict=True):
            future.job = submitted
            self.job_ids.mkdir(parents=True, exist_ok=True)
            self._job_file(job.cell_id).write_text(json.dumps(
                {"job_id": submitted.job_id, "folder": str(self.folder), "run_spec": job.spec}),
                encoding="utf-8")

    def released(self, job: CellJob) -> None:
        self._job_file(job.cell_id).unlink(missing_ok=True)

    def details(self) -> dict[str, Any]:
        return {"executor": self.name}

    def close(self) -> None:
        self.flush()
