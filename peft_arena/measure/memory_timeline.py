"""Memory over time: a background thread samples the cell's memory at a fixed interval, each
sample tagged with the phase the cell is in, and the record keeps a compact series plus max,
mean and p99 overall and per phase.

What is sampled:

- always `rss_bytes`: the resident set of this process (/proc/self/statm on Linux; psutil
  elsewhere, where installed);
- with glibc, `in_use_bytes`: malloc's bytes in use plus the resident file pages, what the
  memory estimate is checked against on CPU (measure.estimate_check);
- on a GPU, through the cell's `GpuMemoryPoller` (its NVML handle, not a second one):
  `device_bytes` (the device's used memory, which counts the CUDA context and other
  processes, see measure.memory), and torch's `torch_allocated_bytes` / `torch_reserved_bytes`.

The statistics come from every sample; the stored series is cut to at most `max_points`
points by splitting the run into equal time buckets and keeping each metric's maximum in a
bucket, so a short peak survives the downsampling. A sample costs a file read (tens of
microseconds) every `interval_s` on a thread that sleeps in between;
benchmarks/memory_timeline_overhead.py measures what it does to a training step.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

import numpy as np

from peft_arena.measure.estimate_check import in_use_reader
from peft_arena.measure.timing import PhaseTimer

DEFAULT_INTERVAL_S = 0.05  # 20 samples a second: a phase of a few seconds gets dozens
DEFAULT_MAX_POINTS = 240  # the stored series: a few KB of JSON per metric

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm_rss() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


def rss_reader() -> Callable[[], int] | None:
    """A function returning this process's resident bytes now, or None where none exists."""
    if sys.platform.startswith("linux") and os.path.exists("/proc/self/statm"):
        return _statm_rss
    try:
        import psutil
    except ImportError:
        return None
    process = psutil.Process()
    return lambda: int(process.memory_info().rss)


def _torch_cuda_readers() -> dict[str, Callable[[], int]]:
    import torch

    return {"torch_allocated_bytes": torch.cuda.memory_allocated,
            "torch_reserved_bytes": torch.cuda.memory_reserved}


def summary(values: np.ndarray) -> dict[str, float]:
    """max, mean and p99 (linear interpolation between samples) of one metric's samples."""
    return {"max": float(values.max()), "mean": float(values.mean()),
            "p99": float(np.percentile(values, 99))}


def compact_series(t_s: np.ndarray, phases: list[str], values: dict[str, np.ndarray],
                   max_points: int) -> dict[str, list[Any]]:
    """At most `max_points` points: equal time buckets, each metric's maximum in a bucket,
    the bucket's time being that of its first sample and its phase that of its last."""
    n = len(t_s)
    if n <= max_points:
        return {"t_s": [round(float(t), 3) for t in t_s], "phase": list(phases),
                **{name: [int(v) for v in column] for name, column in values.items()}}
    span = float(t_s[-1] - t_s[0]) or 1.0
    bucket = np.minimum(((t_s - t_s[0]) / span * max_points).astype(int), max_points - 1)
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))  # first sample of each bucket
    ends = np.append(starts[1:], n) - 1
    return {"t_s": [round(float(t), 3) for t in t_s[starts]],
            "phase": [phases[i] for i in ends],
            **{name: [int(v) for v in np.maximum.reduceat(column, starts)]
               for name, column in values.items()}}


class MemoryTimeline:
    """Samples memory in a background thread from `__enter__` to `__exit__`.

    `timer`: the cell's PhaseTimer; each sample takes its `current` phase. `poller`: the
    cell's GpuMemoryPoller on a GPU (None on CPU). `readers` replaces what is sampled (tests).
    """

    def __init__(self, timer: PhaseTimer | None = None, *, poller: Any = None,
                 interval_s: float = DEFAULT_INTERVAL_S, max_points: int = DEFAULT_MAX_POINTS,
                 readers: dict[str, Callable[[], int]] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.timer, self.interval_s, self.max_points, self.clock = (timer, interval_s,
                                                                     max_points, clock)
        self.readers = readers if readers is not None else self._default_readers(poller)
        self._t = array("d")
        self._phases: list[str] = []
        self._values = {name: array("d") for name in self.readers}
        self.started_at = clock()  # series times count from here
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-timeline")
        self.error: str | None = None

    @staticmethod
    def _default_readers(poller: Any) -> dict[str, Callable[[], int]]:
        readers: dict[str, Callable[[], int]] = {}
        if poller is not None:
            readers["device_bytes"] = poller.device_used_bytes
            import torch

            if torch.cuda.is_available():
                readers.update(_torch_cuda_readers())
        rss = rss_reader()
        if rss is not None:
            readers["rss_bytes"] = rss
        in_use = in_use_reader()
        if in_use is not None and poller is None:
            readers["in_use_bytes"] = in_use
        return readers

    @property
    def primary(self) -> str | None:
        """The metric the report's percentiles are of: device memory on a GPU, else RSS."""
        return next((name for name in ("device_bytes", "rss_bytes") if name in self.readers),
                    next(iter(self.readers), None))

    def sample(self) -> None:
        """One reading of every metric (the thread calls this every `interval_s`)."""
        readings = {name: read() for name, read in self.readers.items()}
        self._t.append(self.clock() - self.started_at)
        self._phases.append(self.timer.current if self.timer is not None else "cell")
        for name, value in readings.items():
            self._values[name].append(value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as exc:  # the samples so far stay; the record says why it stopped
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def __enter__(self) -> MemoryTimeline:
        if self.readers:
            self.sample()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join()
        if self.error is None:
            self.sample()  # the last moments count too

    def report(self) -> dict[str, Any] | None:
        """The record's `memory.timeline` (records.schema.MemoryTimeline); None when nothing
        could be sampled here."""
        if not self._t:
            return None
        t_s = np.frombuffer(self._t, dtype=np.float64)
        values = {name: np.frombuffer(column, dtype=np.float64)
                  for name, column in self._values.items()}
        phases = np.asarray(self._phases)
        by_phase: dict[str, dict[str, Any]] = {}
        for phase in dict.fromkeys(self._phases):  # in the order the cell entered them
            mask = phases == phase
            by_phase[phase] = {"samples": int(mask.sum()),
                               **{name: summary(column[mask])
                                  for name, column in values.items()}}
        return {
            "interval_s": self.interval_s,
            "samples": len(t_s),
            "duration_s": round(float(t_s[-1]), 3),
            "primary": self.primary,
            "stats": {name: summary(column) for name, column in values.items()},
            "phases": by_phase,
            "series": compact_series(t_s, self._phases, values, self.max_points),
            "error": self.error,
        }

