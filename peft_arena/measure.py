"""Measurements taken inside a cell's process: phase times and peak memory."""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class PhaseTimer:
    """Wall time per named phase; `current` says which phase a failure happened in."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}
        self.current = "setup"

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.current = name
        began = time.perf_counter()
        try:
            yield
        finally:
            self.phases[f"{name}_s"] = self.phases.get(f"{name}_s", 0.0) + (
                time.perf_counter() - began
            )

    def total(self) -> float:
        return time.perf_counter() - self.start


def peak_rss_bytes() -> int:
    """Lifetime peak resident memory of this process (one process per cell keeps it honest)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class GpuMemoryPoller:
    """Polls NVML in a background thread: the device's used memory includes the CUDA context
    and the allocator's reserve, which torch's own counters miss."""

    def __init__(self, device_index: int, interval_s: float = 0.05) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self.baseline = pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
        self.peak = self.baseline
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used
            self.peak = max(self.peak, used)
            self._stop.wait(self._interval)

    def __enter__(self) -> GpuMemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def memory_report(poller: GpuMemoryPoller | None) -> dict[str, Any]:
    if poller is None:
        return {"peak_bytes": peak_rss_bytes(), "source": "cpu_rss"}
    return {
        "peak_bytes": poller.peak,
        "source": "nvml",
        "nvml_baseline_bytes": poller.baseline,
        "torch_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "torch_peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        "cpu_peak_rss_bytes": peak_rss_bytes(),
    }
