"""Choose the arithmetic precision a cell trains in."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from peft_arena.common.cpu_features import BF16_FLAGS, cpu_flags
from peft_arena.measure.flops import known_peak_flops


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 | fp16 | fp32

    @property
    def accelerate_name(self) -> str:
        return "no" if self.name == "fp32" else self.name

    @property
    def compute_dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name, torch.float32)


# bf16 must beat fp32 matmuls by this much to be chosen: autocast adds casts, fp32 is exact.
BF16_MIN_GAIN = 1.2


def cpu_has_bf16_instructions() -> bool:
    # Without them autocast emulates bf16 and runs slower than fp32.
    return bool(cpu_flags() & set(BF16_FLAGS))


@functools.cache
def cpu_bf16_pays() -> bool:
    """Whether bf16 matmuls beat fp32 ones on this CPU, by the cached measured peaks.

    Native bf16 instructions are not enough: AMX tiles run bf16 several times faster than fp32,
    but a 2-core AVX512-BF16 CPU without AMX measured 163 GFLOP/s in bf16 against 321 in fp32.
    """
    if not cpu_has_bf16_instructions():
        return False
    cpu = torch.device("cpu")
    bf16, fp32 = (known_peak_flops(cpu, dtype) for dtype in (torch.bfloat16, torch.float32))
    return bf16 >= BF16_MIN_GAIN * fp32


def resolve_precision(requested: str = "auto") -> Precision:
    """`auto`: bf16 on GPUs that have it and on CPUs where it is measured to be faster, fp16
    (loss-scaled) on older GPUs, else fp32."""
    if requested != "auto":
        return Precision(requested)
    if torch.cuda.is_available():
        return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    return Precision("bf16" if cpu_bf16_pays() else "fp32")
