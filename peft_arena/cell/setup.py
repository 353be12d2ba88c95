"""A cell's first step: its precision, the GPU memory poller, a fresh Accelerator with the
spec's trackers, and its strategy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from peft_arena.config.spec import CellSpec
from peft_arena.measure.memory import GpuMemoryPoller
from peft_arena.strategies import Strategy, load_strategies
from peft_arena.train import distributed, trackers
from peft_arena.train.precision import Precision, resolve_precision


@dataclass
class Setup:
    started_at: str
    precision: Precision
    poller: GpuMemoryPoller | None  # GPU memory, polled while the cell runs
    accelerator: Accelerator
    strategy: Strategy

    @property
    def on_gpu(self) -> bool:
        return self.accelerator.device.type == "cuda"


def set_up(spec: CellSpec, results_dir: Path | None, started_at: str) -> Setup:
    precision = resolve_precision(spec.precision)
    # Created before anything allocates on the GPU, so that its baseline shows other
    # processes only.
    poller = GpuMemoryPoller.for_torch_device(0) if torch.cuda.is_available() else None
    # Accelerate keeps one state per process and refuses a second precision in it; a
    # process running several cells (the Python API, `tune`) starts each one afresh.
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=precision.accelerate_name,
                              cpu=not torch.cuda.is_available(),
                              dataloader_config=distributed.dataloader_config(),
                              **trackers.accelerator_kwargs(spec, results_dir))
    trackers.start(accelerator, spec)
    strategy = load_strategies().get(spec.strategy)(spec)
    return Setup(started_at, precision, poller, accelerator, strategy)
