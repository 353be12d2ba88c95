"""The dry run's memory estimate checked against what a CPU cell measured.

A CPU process's peak resident memory also holds the interpreter, torch and the other
libraries (several hundred MiB), which would swamp the estimate's error for any model. So the
cell records its resident memory once setup is done (imports made, Accelerate started, no data
or model loaded yet) and the check compares the estimate with the part of the peak above that
baseline: the tensors the estimate models, plus what it leaves out (the data, the tokenizer,
evaluation batches, the safetensors file's pages while the model loads, the allocator's
slack), so a positive error means the estimate is larger than what the process added.

    error = (estimate - (peak_rss - baseline_rss)) / (peak_rss - baseline_rss)
"""

from __future__ import annotations

import os
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


def baseline_rss() -> dict[str, int | None]:
    """Taken at the end of a cell's setup: the resident memory then, and the peak so far
    (the later peak is the process's lifetime peak, so it can only be this or more)."""
    return {"baseline_rss_bytes": current_rss_bytes(), "peak_rss_at_baseline_bytes":
            peak_rss_bytes()}


def cpu_estimate_check(estimate_total_bytes: int | None, peak_bytes: int | None,
                       baseline_bytes: int | None) -> dict[str, Any] | None:
    """The estimate against the peak above the baseline (module docstring); None when a
    figure is missing or the peak is not above the baseline."""
    if None in (estimate_total_bytes, peak_bytes, baseline_bytes):
        return None
    measured = peak_bytes - baseline_bytes
    if measured <= 0:
        return None
    return {"source": "cpu_rss_above_baseline", "estimate_bytes": int(estimate_total_bytes),
            "measured_bytes": int(measured), "baseline_rss_bytes": int(baseline_bytes),
            "error": (estimate_total_bytes - measured) / measured}
