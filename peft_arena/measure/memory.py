"""Memory measured inside a cell's process: peak memory, weight and adapter size.

Memory figures, and where each comes from:

- CPU: `peak_bytes` is the lifetime peak resident set size of the cell's own process
  (`ru_maxrss`); one process per cell keeps it the cell's.
- GPU: NVML is polled in a background thread. The device's used memory counts the CUDA
  context, the caching allocator's reserve and every other process on the device; the
  per-process figure (`nvmlDeviceGetComputeRunningProcesses`) counts ours only; torch's peak
  allocated and reserved figures miss the context. Each is recorded under its own name, and a
  device that other processes use during the cell marks the figures as contended.
- `weights_bytes`: what the model's parameters and buffers occupy as stored, so a 4-bit base
  shows its real (packed) size next to the full-precision one.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# ------------------------------------------------------------------ CPU memory


def peak_rss_bytes() -> int:
    """Lifetime peak resident memory of this process (one process per cell keeps it honest)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _quant_state_tensors(state: Any) -> Iterator[torch.Tensor]:
    """The tensors a bitsandbytes quantization state holds (scales, code book, nested state)."""
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            yield value
        elif value is not None and hasattr(value, "absmax"):  # the nested (double-quant) state
            yield from _quant_state_tensors(value)


def _stored_tensors(model: torch.nn.Module) -> Iterator[torch.Tensor]:
    for param in model.parameters():
        yield param
        state = getattr(param, "quant_state", None)
        if state is not None:
            yield from _quant_state_tensors(state)
    yield from model.buffers()


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes the parameters and buffers occupy as stored. A 4-bit weight counts its packed
    bytes plus its quantization constants; a tensor shared by several modules counts once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for tensor in _stored_tensors(model):
        key = (str(tensor.device), tensor.data_ptr()) if tensor.device.type != "meta" \
            else ("meta", id(tensor))
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def saved_size_bytes(model: torch.nn.Module) -> int:
    """Bytes on disk of what `save_pretrained` writes: the adapter alone for a PEFT model (its
    own save_pretrained saves only the trained part), the whole model otherwise."""
    with tempfile.TemporaryDirectory(prefix="peft-arena-size-") as folder:
        model.save_pretrained(folder)
        return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


# ------------------------------------------------------------------ GPU memory


@dataclass(frozen=True)
class ProcessAttribution:
    """Which part of the device's memory one NVML reading attributes to this process."""

    own_bytes: int | None  # None: our process is not in the list (or its figure is hidden)
    others_bytes: int  # memory other processes hold (a lower bound where NVML hides a figure)
    others_count: int
    match: str | None  # "pid" | "only_new_process" | None


def attribute_processes(processes: dict[int, int | None], own_pid: int,
                        baseline_pids: Iterable[int]) -> ProcessAttribution:
    """Split NVML's per-process memory into ours and everyone else's.

    Our process is found by pid. Inside a container NVML reports host pids, so when our pid is
    absent and exactly one process appeared since the cell started, that process is ours.
    """
    baseline = set(baseline_pids)
    own_pid_found: int | None = None
    match: str | None = None
    if own_pid in processes:
        own_pid_found, match = own_pid, "pid"
    else:
        new = [pid for pid in processes if pid not in baseline]
        if len(new) == 1:
            own_pid_found, match = new[0], "only_new_process"
    others = {pid: used for pid, used in processes.items() if pid != own_pid_found}
    return ProcessAttribution(
        own_bytes=processes[own_pid_found] if own_pid_found is not None else None,
        others_bytes=sum(used or 0 for used in others.values()),
        others_count=len(others),
        match=match,
    )


class GpuMemoryPoller:
    """Polls NVML in a background thread for the device's and this process's memory peaks.

    Create it before the process touches CUDA, so the baseline shows only other processes.
    `nvml` is the `pynvml` module; tests pass a stand-in with the same functions.
    """

    def __init__(self, device_index: int = 0, interval_s: float = 0.05, *,
                 nvml: Any = None, own_pid: int | None = None) -> None:
        if nvml is None:
            import pynvml as nvml
        self._nvml = nvml
        nvml.nvmlInit()
        self._handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
        self._own_pid = own_pid if own_pid is not None else os.getpid()
        self._interval = interval_s
        self._lock = threading.Lock()
        baseline_processes = self._processes()
        self.process_list_available = baseline_processes is not None
        self._baseline_pids = set(baseline_processes or {})
        self.baseline = self._used()
        self.device_peak = self.baseline
        self.own_peak: int | None = None
        self.own_match: str | None = None
        self.others_peak_bytes = 0
        self.others_peak_count = 0
        self.error: str | None = None
        self.sample(baseline_processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gpu-memory")

    @classmethod
    def for_torch_device(cls, index: int = 0) -> GpuMemoryPoller | None:
        """The poller for torch's CUDA device `index`, or None (with a warning) where NVML
        cannot watch it; the record then keeps torch's own figures and the CPU's.

        NVML numbers devices in PCI order and ignores CUDA_VISIBLE_DEVICES; torch's own NVML
        helper maps one to the other without creating a CUDA context.
        """
        try:
            nvml_index = torch.cuda._get_nvml_device_index(index)
            return cls(nvml_index)
        except Exception as exc:  # no NVML library, an unreadable device: measure without it
            warnings.warn(f"GPU memory is not polled (NVML: {exc}); the record keeps torch's "
                          f"peak figures only.", stacklevel=2)
            return None

    def _used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def device_used_bytes(self) -> int:
        """The device's used memory now (what measure.memory_timeline samples over time)."""
        return self._used()

    def _processes(self) -> dict[int, int | None] | None:
        try:
            listed = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except self._nvml.NVMLError:
            return None  # not supported here (some virtualised GPUs)
        return {int(p.pid): (None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                for p in listed}

    def sample(self, processes: dict[int, int | None] | None = None) -> None:
        """Take one reading (the background thread calls this every `interval_s`)."""
        used = self._used()
        processes = self._processes() if processes is None else processes
        with self._lock:
            self.device_peak = max(self.device_peak, used)
            if processes is None:
                return
            seen = attribute_processes(processes, self._own_pid, self._baseline_pids)
            if seen.own_bytes is not None:
                self.own_peak = max(self.own_peak or 0, seen.own_bytes)
                self.own_match = seen.match
            self.others_peak_bytes = max(self.others_peak_bytes, seen.others_bytes)
            self.others_peak_count = max(self.others_peak_count, seen.others_count)

    @property
    def contended(self) -> bool | None:
        """True when another process held memory on the device at any reading; None when NVML
        cannot list processes here, so nobody can tell."""
        if not self.process_list_available:
            return None
        return self.others_peak_count > 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except self._nvml.NVMLError as exc:  # the figures so far stay; the report says so
                self.error = str(exc)
                return

    def __enter__(self) -> GpuMemoryPoller:
        if self.contended:
            warnings.warn(contention_message(self.others_peak_count, self.others_peak_bytes),
                          stacklevel=2)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is None:
            self.sample()  # the last moments count too

    def report(self) -> dict[str, Any]:
        return {
            # The headline figure is the cell's own when NVML can attribute it.
            "peak_bytes": self.own_peak if self.own_peak is not None else self.device_peak,
            "source": "nvml",
            "device_peak_bytes": self.device_peak,
            "device_baseline_bytes": self.baseline,
            "process_peak_bytes": self.own_peak,
            "process_match": self.own_match,
            **torch_cuda_peaks(),
            "contended": self.contended,
            "other_processes_peak_bytes": self.others_peak_bytes,
            "other_processes_peak_count": self.others_peak_count,
            "nvml_error": self.error,  # polling stopped early when this is set
        }


def torch_cuda_peaks() -> dict[str, int]:
    """torch's caching-allocator peaks (they miss the CUDA context), where CUDA was used."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"torch_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
            "torch_peak_reserved_bytes": torch.cuda.max_memory_reserved()}


def contention_message(count: int, used: int) -> str:
    return (f"{count} other process(es) held {used / 2**30:.2f} GiB on the GPU during this cell; "
            f"its device memory figures include them (memory.contended is true). Run on an idle "
            f"GPU for clean numbers.")


def memory_report(poller: GpuMemoryPoller | None,
                  model_weights_bytes: int | None = None) -> dict[str, Any]:
    """The record's `memory` section. Call it last in the cell, after everything that
    allocates, since peak resident memory is a lifetime figure."""
    if poller is None:
        report: dict[str, Any] = {"peak_bytes": peak_rss_bytes(), "source": "cpu_rss",
                                  **torch_cuda_peaks()}
    else:
        report = {**poller.report(), "cpu_peak_rss_bytes": peak_rss_bytes()}
        if report["contended"]:
            warnings.warn(contention_message(report["other_processes_peak_count"],
                                             report["other_processes_peak_bytes"]), stacklevel=2)
    report["weights_bytes"] = model_weights_bytes
    return report
