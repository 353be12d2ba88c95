"""Choose the arithmetic precision a cell trains in."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from peft_arena.provenance import cpu_flags


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 | fp16 | fp32

    @property
    def accelerate_name(self) -> str:
        return "no" if self.name == "fp32" else self.name

    @property
    def compute_dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name, torch.float32)


def cpu_has_fast_bf16() -> bool:
    # Without native bf16 instructions autocast emulates bf16 and runs slower than fp32.
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(requested: str = "auto") -> Precision:
    """`auto`: bf16 where the hardware has it, fp16 (loss-scaled) on older GPUs, else fp32."""
    if requested != "auto":
        return Precision(requested)
    if torch.cuda.is_available():
        return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    return Precision("bf16" if cpu_has_fast_bf16() else "fp32")
