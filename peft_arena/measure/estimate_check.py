"""The dry run's memory estimate checked against what a CPU cell measured.

A CPU process's peak resident memory also holds the interpreter, torch and the other
libraries (several hundred MiB), which would swamp the estimate's error for any model. So the
cell records its resident memory once setup is done (imports made, Accelerate started, no data
or model loaded yet) and the check compares the estimate with the part of the peak above that
baseline: the tensors the estimate models, plus what it leaves out (the data, the tokenizer,
evaluation batches, the safetensors file's pages while the model loads, the allocator's
slack), so a positive error means the estimate is larger than what the process added.

    error = (estimate - (peak_rss - baseline_rss)) / (peak_rss - baseline_rss)

The resident peak also holds what glibc's allocator keeps after tensors are freed: it serves
blocks up to 32 MiB from its heap once one that size was freed, and a heap holed by freed
activations keeps its pages. On SmolLM2 that slack is hundreds of MiB, more than the
estimate's errors. So the cell also samples the memory in use (the memory timeline's
`in_use_bytes`, every 50 ms): the resident memory less the free blocks malloc keeps in its
heaps (glibc's mallinfo2; its top block is left in, as it may never have been touched). So
it counts what malloc handed out, and also what it did not: a memory-mapped safetensors
file's weights, and their copy-on-write pages once full fine-tuning updates them. Its
maximum above the same baseline is the check's `in_use_error`:

    in_use_error = (estimate - (max in_use - baseline in_use)) / (max in_use - baseline in_use)

Sampled, so a peak shorter than 50 ms can be missed; the training step's peak (every saved
activation, at the turn from forward to backward) lasts far longer on a CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any

from peft_arena.measure.memory import peak_rss_bytes


def current_rss_bytes() -> int | None:
    """This process's resident memory now (Linux: /proc/self/statm); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    """glibc's mallinfo2 (glibc 2.33 and later), or None (another C library, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):
        return None
    if function is None:
        return None
    function.restype = _MallInfo2
    return function


def in_use_reader() -> Callable[[], int] | None:
    """A function returning the memory this process has in use now (module docstring): the
    resident memory less malloc's free blocks outside its top one; None where glibc or
    /proc/self/statm is missing."""
    mallinfo = _mallinfo2()
    if mallinfo is None or current_rss_bytes() is None:
        return None

    def read() -> int:
        info = mallinfo()
        resident = current_rss_bytes() or 0
        return resident - int(info.fordblks - info.keepcost)

    return read


_IN_USE = in_use_reader()


def baseline_rss() -> dict[str, int | None]:
    """Taken at the end of a cell's setup: the resident memory then, the peak so far
    (the later peak is the process's lifetime peak, so it can only be this or more), and
    the memory in use then."""
    return {"baseline_rss_bytes": current_rss_bytes(), "peak_rss_at_baseline_bytes":
            peak_rss_bytes(), "baseline_in_use_bytes": _IN_USE() if _IN_USE else None}


def cpu_estimate_check(estimate_total_bytes: int | None, peak_bytes: int | None,
                       baseline_bytes: int | None, *, max_in_use_bytes: float | None = None,
                       baseline_in_use_bytes: int | None = None) -> dict[str, Any] | None:
    """The estimate against the peak above the baseline, and against the most memory in use
    above its baseline where both were sampled (module docstring); None when a figure is
    missing or the peak is not above the baseline."""
    if None in (estimate_total_bytes, peak_bytes, baseline_bytes):
        return None
    measured = peak_bytes - baseline_bytes
    if measured <= 0:
        return None
    check = {"source": "cpu_rss_above_baseline", "estimate_bytes": int(estimate_total_bytes),
             "measured_bytes": int(measured), "baseline_rss_bytes": int(baseline_bytes),
             "error": (estimate_total_bytes - measured) / measured}
    if max_in_use_bytes is not None and baseline_in_use_bytes is not None \
            and max_in_use_bytes > baseline_in_use_bytes:
        in_use = int(max_in_use_bytes) - baseline_in_use_bytes
        check.update(in_use_bytes=in_use, baseline_in_use_bytes=int(baseline_in_use_bytes),
                     in_use_error=(estimate_total_bytes - in_use) / in_use)
    return check
