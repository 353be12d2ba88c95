"""Each cell a Ray task, on a running cluster (`--ray-address`, or RAY_ADDRESS) or on a local
one started for the run.

The task asks for its resources (num_cpus, and num_gpus = devices per cell on GPU runs),
reports which worker took it, starts the cell's own process on that worker and sends the
record back; the matrix writes it, so workers need no shared filesystem for results. Data
must come from the Hub or from a `--data-dir` path every worker can read.

A worker or node that dies mid-cell: Ray runs the task again (`max_retries`), and if that
attempt dies too the cell gets one failed record naming the lost worker. Only the matrix
writes records, and only once per cell, so a retried cell is never recorded twice.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from peft_arena.common.errors import UserError
from peft_arena.matrix.executors.base import CellJob, CellReturn, run_cell_here, worker_name

# Attempts after the first when a worker dies mid-cell (a cell that fails in Python is not
# retried: its failed record is the answer).
MAX_RETRIES = 1
_CONNECT_TIMEOUT_S = 5.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'peft-arena[ray]'.") from None
    return ray


def _check_reachable(address: str) -> None:
    """A fast, one-line answer for an address that does not answer (Ray itself retries for
    a long time before it gives up)."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 6379),
                                      timeout=_CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(f"--ray-address {address}: nothing answers there ({exc}); start the "
                        "cluster (ray start --head) or leave the option out for a local "
                        "one.") from None


def _cell_task(job: CellJob) -> Iterator[Any]:
    """First the worker that took the cell (so a lost cell can name it), then the result."""
    import ray

    context = ray.get_runtime_context()
    where = f"{worker_name()} (Ray node {context.get_node_id()[:12]})"
    yield where
    with tempfile.TemporaryDirectory(prefix="peft-arena-cell-") as folder:
        result = run_cell_here(job, Path(folder) / "work")
    result.worker = where
    yield result


@dataclass
class RayFuture:
    ray: Any
    generator: Any
    attempts_seen: list[str] = field(default_factory=list)
    _result: CellReturn | None = None

    def _poll_worker(self) -> None:
        # The first item names the worker; a retried task names the next one.
        while True:
            ready, _ = self.ray.wait([self.generator], timeout=0)
            if not ready:
                return
            try:
                item = self.ray.get(next(self.generator))
            except StopIteration:
                return
            except Exception as exc:  # the worker died, or the task was cancelled
                self._result = self._lost(exc)
                return
            if isinstance(item, CellReturn):
                # A retried task's first item (its worker) is not delivered again: Ray
                # drops items it has already streamed. A result from another worker than the
                # one announced is a second attempt.
                first = self.attempts_seen[0] if self.attempts_seen else item.worker
                item.attempts = 1 if item.worker == first else 2
                self._result = item
                return
            self.attempts_seen.append(item)

    def _lost(self, exc: Exception) -> CellReturn:
        where = self.attempts_seen[-1] if self.attempts_seen else "a Ray worker"
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return CellReturn(code=None, record=None, worker=where,
                          lost=f"the Ray worker running it ({where}) was lost: "
                               f"{type(exc).__name__}: {detail}",
                          attempts=max(1, len(self.attempts_seen)))

    def done(self) -> bool:
        if self._result is None:
            self._poll_worker()
        return self._result is not None

    def result(self) -> CellReturn:
        while not self.done():
            self.ray.wait([self.generator], timeout=1.0)
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        self.ray.cancel(self.generator, force=True)


@dataclass
class RayExecutor:
    address: str | None = None
    devices_per_cell: int = 1
    cpus_per_cell: int | None = None
    name: str = "ray"
    _ray: Any = None
    _remote: Any = None
    _gpu: bool = False

    def __post_init__(self) -> None:
        ray = _import_ray()
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            _check_reachable(address)
        if not ray.is_initialized():
            try:
                # Cells log to their worker's files; the matrix prints their outcomes.
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, runtime_env=self._runtime_env())
            except ConnectionError as exc:
                raise UserError(f"--ray-address {address}: {str(exc).splitlines()[0]}; "
                                "start the cluster or leave the option out.") from None
        self._ray = ray
        resources = ray.cluster_resources()
        self._gpu = resources.get("GPU", 0) > 0
        available = resources.get("GPU") if self._gpu else resources.get("CPU", 0)
        if self.devices_per_cell > (available or 0):
            kind = "GPUs" if self._gpu else "CPUs"
            raise UserError(f"devices_per_cell={self.devices_per_cell} is more than the "
                            f"{int(available or 0)} {kind} of the Ray cluster.")

    @staticmethod
    def _runtime_env() -> dict[str, Any]:
        # A checkout run with PYTHONPATH (not installed) must be importable on the workers.
        path = os.environ.get("PYTHONPATH")
        return {"env_vars": {"PYTHONPATH": path}} if path else {}

    def capacity(self) -> int:
        return 1 << 30  # Ray queues tasks until the cluster has room

    def prepare(self, job: CellJob) -> CellJob:
        return job

    def submit(self, job: CellJob) -> RayFuture:
        cpus = self.cpus_per_cell or (1 if self._gpu else job.processes)
        options = {"num_cpus": cpus, "num_gpus": job.processes if self._gpu else 0,
                   "max_retries": MAX_RETRIES, "retry_exceptions": False}
        remote = self._ray.remote(_cell_task).options(**options)
        return RayFuture(self._ray, remote.remote(job))

    def flush(self) -> None:
        pass  # submit started the cell already

    def released(self, job: CellJob) -> None:
        pass

    def details(self) -> dict[str, Any]:
        return {"executor": self.name}

    def close(self) -> None:
        pass  # a cluster the run joined keeps running; a local one ends with this process
