"""The CPU's model name and feature flags, and the one list of flags that change training speed.

A leaf: records (measure/provenance.py), hardware labels (measure/hardware_identity.py) and the
precision choice (train/precision.py) all read the flags from here, so that they agree.
"""

from __future__ import annotations

import platform
from pathlib import Path

# CPU features that change how fast training runs; recorded as `cpu_speed_flags`.
SPEED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
# Native bf16 instructions: without them autocast emulates bf16 and runs slower than fp32.
# Recorded as `cpu_bf16_flags`.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The flags a hardware label shows, by the name it shows them under.
SHOWN_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
