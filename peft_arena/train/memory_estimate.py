"""An estimate of a cell's training memory, from the model's config alone (no weights).

    weights      every parameter and buffer as the cell stores it: fp32 where it trains,
                 the frozen base in bf16 in bf16 runs of a PEFT strategy (fp32 otherwise),
                 4-bit NF4 linear weights under QLoRA (0.5 byte a value plus the per-block
                 scales: 1/64 byte with double quantization, 4/64 without)
    gradients    4 bytes per trainable parameter
    optimizer    AdamW's two fp32 moments: 8 bytes per trainable parameter
    autocast     the bf16/fp16 copies autocast keeps of trainable weights during a step:
                 2 bytes per trainable parameter in mixed precision
    activations  what the backward pass needs of one batch of `batch_size` x `max_length`
                 tokens, per layer:
                   s*b*(6h + 2*h_kv)   norm inputs, projection inputs, queries, keys, values,
                                       attention output
                   s*b*i*(4 | 2)       feed-forward: gate, up, activation and their product in
                                       a gated MLP (Llama, Qwen, Mistral, Gemma), else up and
                                       activation (BERT, GPT-2)
                   a*s*s*b             attention probabilities, with eager attention only
                                       (SDPA's fused kernels on GPU keep none)
                 in the compute dtype, plus the embedding output and the final norm. With
                 gradient checkpointing: each layer's input, plus one layer's activations
                 recomputed at a time.

What it leaves out: the CUDA context and the caching allocator's reserve (compare it with
torch's peak allocated memory, not NVML's), dropout masks, the loss, transient buffers of
single kernels (de-quantized 4-bit weights, attention workspaces), evaluation batches, and
on CPU the interpreter and its libraries, which dominate a small model's resident memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from peft_arena.config.spec import CellSpec
from peft_arena.model.four_bit import nf4_bytes_per_value
from peft_arena.model.heads import (
    check_classifiable,
    full_precision_module_names,
    load_config,
)
from peft_arena.model.heads import skeleton as build_skeleton
from peft_arena.strategies import load_strategies
from peft_arena.train.memory_tools import base_dtype
from peft_arena.train.precision import resolve_precision

# Parameter shapes do not depend on the schedule; AdaLoRA only needs a valid step count.
_COUNTING_STEPS = 100
_GATED_MLP_NAMES = ("gate_proj", "gate_up_proj", "w1")


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    autocast_bytes: int
    activations_bytes: int
    activations_checkpointed_bytes: int
    gradient_checkpointing: bool

    @property
    def total_bytes(self) -> int:
        activations = (self.activations_checkpointed_bytes if self.gradient_checkpointing
                       else self.activations_bytes)
        return (self.weights_bytes + self.gradients_bytes + self.optimizer_bytes
                + self.autocast_bytes + activations)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def _quantized_weights(model: torch.nn.Module, skip: list[str]) -> set[int]:
    """ids of the weights a 4-bit load quantizes: every linear layer outside `skip`."""
    return {id(module.weight) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and not any(name == s or name.startswith(f"{s}.") for s in skip)}


def _weights_bytes(model: torch.nn.Module, quantized: set[int], nf4_bytes: float,
                   frozen_bytes: int) -> int:
    total = 0.0
    for param in model.parameters():
        if param.requires_grad:
            total += param.numel() * 4
        elif id(param) in quantized:
            total += param.numel() * nf4_bytes
        else:
            total += param.numel() * frozen_bytes
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    return int(total)


def activation_bytes(config: Any, *, batch_size: int, length: int, element_bytes: int,
                     gated_mlp: bool, eager_attention: bool, checkpointed: bool) -> int:
    """What the backward pass keeps of one batch (see the module docstring for the terms)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, layers = text.hidden_size, text.num_hidden_layers
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    inner = (getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None)
             or 4 * hidden)
    tokens = batch_size * length
    per_layer = tokens * (6 * hidden + 2 * kv) + tokens * inner * (4 if gated_mlp else 2)
    if eager_attention:
        per_layer += heads * length * tokens
    outside_layers = 2 * tokens * hidden  # the embedding output and the final norm's input
    kept = layers * tokens * hidden + per_layer if checkpointed else layers * per_layer
    return (kept + outside_layers) * element_bytes


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
            quantized = _quantized_weights(model, full_precision_module_names(model))
            double_quant = bool(quantization.bnb_4bit_use_double_quant)
        gated = any(name.endswith(_GATED_MLP_NAMES) for name, _ in model.named_modules())
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
        weights_bytes=_weights_bytes(model, quantized, nf4_bytes_per_value(double_quant),
                                     torch.tensor([], dtype=frozen).element_size()),
        gradients_bytes=4 * trainable,
        optimizer_bytes=8 * trainable,
        autocast_bytes=2 * trainable if mixed else 0,
        activations_bytes=activations[False],
        activations_checkpointed_bytes=activations[True],
        gradient_checkpointing=spec.gradient_checkpointing,
    )
