"""Where cells run: `local` (processes on this machine), `ray` (tasks on a Ray cluster) or
`slurm` (jobs through submitit). The matrix drives all three through one interface
(base.Executor); the records do not depend on which ran them, except for their `execution`
section, which says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.matrix.executors.base import CellFuture, CellJob, CellReturn, Executor

__all__ = ["EXECUTORS", "CellFuture", "CellJob", "CellReturn", "Executor", "ExecutorSettings",
           "make_executor"]

EXECUTORS = ("local", "ray", "slurm")


@dataclass
class ExecutorSettings:
    """How to run cells: from the command line, a preset's `executor:` section or Python."""

    name: str = "local"
    workers: int = 1  # local: cells at once
    ray_address: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)  # slurm.SlurmSettings fields

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise UserError(f"Unknown executor {self.name!r}; use one of "
                            f"{', '.join(EXECUTORS)}.")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise UserError(f"--workers {self.workers}: give 1 or more cells to run at once.")

    @classmethod
    def from_preset(cls, section: dict[str, Any], **overrides: Any) -> ExecutorSettings:
        """The preset's `executor:` section, then the command line's non-empty values."""
        known = {"name", "workers", "ray_address", "slurm"}
        unknown = set(section) - known
        if unknown:
            raise UserError(f"Preset executor section: unknown key(s) "
                            f"{', '.join(sorted(unknown))}; allowed: {', '.join(sorted(known))}.")
        values = {**section, **{k: v for k, v in overrides.items() if v not in (None, {})}}
        slurm = {**(section.get("slurm") or {}), **(overrides.get("slurm") or {})}
        return cls(**{**values, "slurm": slurm})


def make_executor(settings: ExecutorSettings, lock_dir: Path, devices_per_cell: int) -> Executor:
    """The executor, ready to take cells; raises UserError before any cell runs when it
    cannot (a missing extra, an address that does not answer, too few devices)."""
    if settings.name == "ray":
        from peft_arena.matrix.executors.ray import RayExecutor

        return RayExecutor(settings.ray_address, devices_per_cell)
    if settings.name == "slurm":
        from peft_arena.matrix.executors.slurm import SlurmExecutor, SlurmSettings

        try:
            slurm = SlurmSettings(**settings.slurm)
        except TypeError as exc:
            raise UserError(f"Slurm settings: {exc}.") from None
        return SlurmExecutor(lock_dir.parent.parent / "slurm", lock_dir, slurm,
                             devices_per_cell)
    from peft_arena.matrix.executors.local import LocalExecutor

    return LocalExecutor(lock_dir, settings.workers, devices_per_cell)
