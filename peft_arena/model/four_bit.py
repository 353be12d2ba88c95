"""Which kernels a cell's 4-bit weights ran on, in words for the record and the terminal.

bitsandbytes' import-time warnings about its optional fused CPU kernel are kept off the
terminal (see `peft_arena/common/library_logs.py`); a cell that loads 4-bit weights records this
instead, and `peft-arena run` prints it once per run.
"""

from __future__ import annotations

import sys

import torch

from peft_arena.common import library_logs

FUSED_REPOSITORY = "kernels-community/quantization-bitsandbytes"

# What the captured warning says -> why the fused kernel is not used, for the user.
_REASONS = (
    ("not available in the local cache", "is not in the local Hugging Face cache"),
    ("could not verify publisher trust", "could not be verified as from a trusted publisher"),
)


def has_four_bit_weights(model: torch.nn.Module) -> bool:
    return any(p.__class__.__name__ == "Params4bit" for p in model.parameters())


def _why_not_fused() -> str:
    for message in library_logs.captured:
        for found, reason in _REASONS:
            if found in message:
                return reason
    return "could not be loaded"


def kernel_note(model: torch.nn.Module, device_type: str) -> str | None:
    """One line on the 4-bit kernels the model runs on; None when it has no 4-bit weights."""
    if not has_four_bit_weights(model):
        return None
    if device_type != "cpu":
        return f"4-bit weights ran on bitsandbytes' {device_type.upper()} kernels"
    cpu_ops = sys.modules.get("bitsandbytes.backends.cpu.ops")
    if getattr(cpu_ops, "gemm_4bit_forward_kernel", None) is not None:
        return f"4-bit weights ran on bitsandbytes' CPU kernels with the fused one from " \
               f"{FUSED_REPOSITORY}"
    if not hasattr(cpu_ops, "gemm_4bit_forward_kernel"):  # no AVX512-BF16: nothing to fuse
        return "4-bit weights ran on bitsandbytes' built-in CPU kernels"
    return (f"4-bit weights ran on bitsandbytes' built-in CPU kernels: the optional fused "
            f"kernel ({FUSED_REPOSITORY}) {_why_not_fused()}, which changes speed only")
