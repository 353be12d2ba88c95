"""Everything the package knows of 4-bit NF4 weights (QLoRA): how they are loaded, how
much memory they take, the training layout bitsandbytes must keep, and which kernels they ran
on, in words for the record and the terminal.

bitsandbytes' import-time warnings about its optional fused CPU kernel are kept off the
terminal (see `peft_arena/common/library_logs.py`); a cell that loads 4-bit weights records this
instead, and `peft-arena run` prints it once per run.
"""

from __future__ import annotations

import sys

import torch
from transformers import BitsAndBytesConfig

from peft_arena.common import library_logs

FUSED_REPOSITORY = "kernels-community/quantization-bitsandbytes"

# What the captured warning says -> why the fused kernel is not used, for the user.
_REASONS = (
    ("not available in the local cache", "is not in the local Hugging Face cache"),
    ("could not verify publisher trust", "could not be verified as from a trusted publisher"),
)


def nf4_config(compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """How a QLoRA cell loads its base: linear weights in NF4 with double quantization,
    computing in the cell's precision."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def nf4_bytes_per_value(double_quant: bool) -> float:
    """Packed NF4 (two values a byte) plus one scale per block of 64 values: an 8-bit scale
    with one fp32 scale per 256 blocks over it with double quantization, an fp32 one without."""
    return 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)


def keep_training_layout(model: torch.nn.Module) -> None:
    """bitsandbytes repacks 4-bit weights for its CPU inference kernel the first time a module
    runs in eval mode and never unpacks them: training after the first validation then fails,
    and layers narrower than its block size fail outright. Keep the training layout
    throughout (evaluation then gives the outputs training saw)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def is_four_bit(param: torch.Tensor) -> bool:
    return param.__class__.__name__ == "Params4bit"


def has_four_bit_weights(model: torch.nn.Module) -> bool:
    return any(is_four_bit(p) for p in model.parameters())


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
