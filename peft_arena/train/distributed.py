"""One cell over several processes (devices_per_cell > 1), data-parallel through Accelerate.

The matrix starts the ranks under torchrun; Accelerate reads the ranks from the environment
(MULTI_GPU on GPUs, MULTI_CPU with gloo on CPUs). Batches are split across the ranks
(`split_batches`), so `batch_size` is the global batch and a cell takes the same optimizer
steps on any number of devices. Evaluation gathers with `gather_for_metrics`, which drops the
padding of the last batch, so every test example counts exactly once. Rank 0 writes the
record; counts of examples and tokens are summed over the ranks (the whole cell's throughput),
peak memory is kept per rank and as the maximum, and MFU is against the ranks' summed peak.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from peft_arena.measure.hardware_identity import identity_label


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a cell of one process."""
    return int(os.environ.get("RANK", "0")) == 0


def dataloader_config() -> DataLoaderConfiguration:
    # One process keeps its batches whole, as a cell always ran.
    return DataLoaderConfiguration(split_batches=int(os.environ.get("WORLD_SIZE", "1")) > 1)


class SizedBatches(list):
    """A list of index batches that says its batch size, which Accelerate needs to split a
    batch sampler across ranks. It hands out copies: Accelerate pads an uneven last batch by
    growing the first batch in place (accelerate 1.15, BatchSamplerShard), which would change
    the caller's batches and this list's own next pass."""

    def __init__(self, batches: list[list[int]], batch_size: int) -> None:
        super().__init__(list(batch) for batch in batches)
        self.batch_size = batch_size

    def __iter__(self):
        return (list(batch) for batch in super().__iter__())


def sum_over_ranks(accelerator: Accelerator, *counts: int) -> list[int]:
    if accelerator.num_processes == 1:
        return list(counts)
    values = torch.tensor(counts, dtype=torch.float64, device=accelerator.device)
    return [int(v) for v in accelerator.reduce(values, reduction="sum").tolist()]


def per_rank(accelerator: Accelerator, value: int | None) -> list[int | None]:
    if accelerator.num_processes == 1:
        return [value]
    tensor = torch.tensor([-1 if value is None else value], dtype=torch.float64,
                          device=accelerator.device)
    return [None if v < 0 else int(v) for v in accelerator.gather(tensor).tolist()]


def scale_peak(compute: dict[str, Any], processes: int) -> dict[str, Any]:
    """MFU of the whole cell: its achieved FLOP/s over `processes` times one device's peak."""
    if processes == 1 or not compute.get("peak_flops_per_s"):
        return compute
    peak = compute["peak_flops_per_s"] * processes
    achieved = compute.get("train_flops_per_s")
    return {**compute, "peak_flops_per_s": peak, "peak_devices": processes,
            "mfu": achieved / peak if achieved is not None else None}


def execution_section(accelerator: Accelerator, rank_peaks: list[int | None],
                      hardware: dict[str, Any], precision: str) -> dict[str, Any]:
    """What the cell itself knows about how it ran; the matrix adds where and by whom."""
    processes = accelerator.num_processes
    return {
        "processes": processes,
        "distributed_type": str(accelerator.distributed_type.value),
        "threads": torch.get_num_threads(),
        "per_rank_peak_bytes": rank_peaks,
        "hardware": identity_label(hardware, precision, processes),
    }
