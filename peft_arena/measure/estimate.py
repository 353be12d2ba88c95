"""An estimate of a cell's training memory, from the model's config alone (no weights); the
cell layer's `peft_arena.cell.memory_estimate` applies it to a cell.

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

GATED_MLP_NAMES = ("gate_proj", "gate_up_proj", "w1")  # a module so named: a gated MLP


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


def nf4_bytes_per_value(double_quant: bool) -> float:
    """Packed NF4 (two values a byte) plus one scale per block of 64 values: an 8-bit scale
    with one fp32 scale per 256 blocks over it with double quantization, an fp32 one without."""
    return 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)


def quantized_weights(model: torch.nn.Module, skip: list[str]) -> set[int]:
    """ids of the weights a 4-bit load quantizes: every linear layer outside `skip`."""
    return {id(module.weight) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and not any(name == s or name.startswith(f"{s}.") for s in skip)}


def stored_weights_bytes(model: torch.nn.Module, quantized: set[int], nf4_bytes: float,
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
