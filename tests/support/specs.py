"""One cell spec for the tiny models on the synthetic task, for every test that runs a cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft_arena.config.spec import CellSpec

# A second or two per cell on a CPU. fp32 named, not "auto": `auto` picks bf16 on CPUs where
# it is measured to be faster (AMX), and a test's numbers must not depend on the machine.
TINY = {"epochs": 1, "max_train_samples": 48, "max_eval_samples": 30, "batch_size": 16,
        "max_length": 32, "learning_rate": 1e-2, "precision": "fp32"}


def tiny_spec(model: str | Path, task_file: str | Path | None, strategy: str = "lora", *,
              task: str = "synth", **settings: Any) -> CellSpec:
    """A cell of `task` (the synthetic one, from its task file) on `model`; `settings`
    override TINY and set any other field of CellSpec."""
    return CellSpec(model=str(model), task=task, strategy=strategy,
                    task_file=None if task_file is None else str(task_file),
                    **{**TINY, **settings})
