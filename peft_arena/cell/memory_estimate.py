"""A cell's training-memory estimate, from its model's config on the meta device (the terms
are in peft_arena.measure.estimate)."""

from __future__ import annotations

import torch

from peft_arena.cell.heads import check_classifiable, full_precision_module_names, load_config
from peft_arena.cell.heads import skeleton as build_skeleton
from peft_arena.cell.memory_tools import base_dtype
from peft_arena.cell.precision import resolve_precision
from peft_arena.config.spec import CellSpec
from peft_arena.measure.estimate import (
    GATED_MLP_NAMES,
    MemoryEstimate,
    activation_bytes,
    nf4_bytes_per_value,
    quantized_weights,
    stored_weights_bytes,
)
from peft_arena.strategies import load_strategies

# Parameter shapes do not depend on the schedule; AdaLoRA only needs a valid step count.
_COUNTING_STEPS = 100


def estimate_cell_memory(spec: CellSpec, num_labels: int, *, on_gpu: bool | None = None,
                         batch_size: int | None = None,
                         trust_remote_code: bool = False) -> MemoryEstimate:
    """The estimate for one cell, built on the meta device from the model's config.

    `batch_size`: the batch of one forward pass (default: the spec's; a cell that fell back
    to a smaller one passes that). `on_gpu` decides the attention kernel (default: whether
    this machine has CUDA).
    """
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    strategy = load_strategies().get(spec.strategy)(spec)
    precision = resolve_precision(spec.precision)
    config = load_config(spec.model, trust_remote_code=trust_remote_code, num_labels=num_labels)
    check_classifiable(spec.model, config)
    quantization = strategy.load_kwargs(precision.compute_dtype).get("quantization_config")
    quantized: set[int] = set()
    double_quant = False
    # Built and wrapped in one meta-device context: AdaLoRA's buffers stay frozen then.
    with torch.device("meta"):
        model = build_skeleton(config, trust_remote_code=trust_remote_code)
        if getattr(quantization, "load_in_4bit", False):
            quantized = quantized_weights(model, full_precision_module_names(model))
            double_quant = bool(quantization.bnb_4bit_use_double_quant)
        gated = any(name.endswith(GATED_MLP_NAMES) for name, _ in model.named_modules())
        model = strategy.wrap_for_counting(model, _COUNTING_STEPS)
    frozen = base_dtype(strategy.peft_config_class is not None, precision.name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    mixed = precision.name != "fp32"
    element_bytes = 2 if mixed else 4
    activations = {
        checkpointed: activation_bytes(
            config, batch_size=batch_size or spec.batch_size, length=spec.max_length,
            element_bytes=element_bytes, gated_mlp=gated, eager_attention=not on_gpu,
            checkpointed=checkpointed)
        for checkpointed in (False, True)}
    return MemoryEstimate(
        weights_bytes=stored_weights_bytes(model, quantized, nf4_bytes_per_value(double_quant),
                                     torch.tensor([], dtype=frozen).element_size()),
        gradients_bytes=4 * trainable,
        optimizer_bytes=8 * trainable,
        autocast_bytes=2 * trainable if mixed else 0,
        activations_bytes=activations[False],
        activations_checkpointed_bytes=activations[True],
        gradient_checkpointing=spec.gradient_checkpointing,
    )
