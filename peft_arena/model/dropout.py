"""Dropout with cheaper random numbers, for training on CPU.

PyTorch's CPU dropout draws one random number per element from a single-threaded generator:
profiled on MiniLM with 2 threads, it took 27-29% of a LoRA step. This one draws 16 random
bits per element, four to one 64-bit draw from the same seeded generator, so the mask costs
about a quarter as much. A unit is dropped with probability p rounded to a multiple of 2^-16
(0.1 becomes 0.100006) and the kept ones are scaled by 1 / (1 - that p), so the expected
activation is unchanged. GPUs keep PyTorch's dropout, which is already fast there.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from peft_arena.model.loading import transformers_model

LEVELS = 1 << 16
# The attention implementation name under which `eager_attention` is registered.
ATTENTION_NAME = "eager_fast_dropout"
# Model types whose own eager attention `eager_attention` reproduces exactly (tested).
ATTENTION_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})


def _keep_mask(shape: torch.Size, keep_levels: int) -> torch.Tensor:
    count = shape.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((count + 3) // 4,), dtype=torch.int64)
    # Uniform over [-2^15, 2^15): keep the `keep_levels` highest values.
    return (words.view(torch.int16)[:count] >= LEVELS // 2 - keep_levels).view(shape)


class _ScaleByMask(torch.autograd.Function):
    """x * keep * scale, saving the boolean mask (1 byte an element) for the backward pass;
    a scale of 1 is left out. `torch.where` reads the mask as it is; `x * keep` would first
    copy it into a float tensor the size of `x` (a third of the dropout's time at
    16 x 12 x 256 x 256). The scale is applied in place on that same buffer, forward and
    backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        kept = torch.where(keep, x, 0.0)
        return kept if scale == 1.0 else kept.mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        kept = torch.where(keep, grad, 0.0)
        return kept if ctx.scale == 1.0 else kept.mul_(ctx.scale), None, None


def _dropout(x: torch.Tensor, p: float, training: bool, *,
             rescale: bool = True) -> tuple[torch.Tensor, float]:
    """`x` with dropped units zeroed, and the 1 / (1 - p) its kept units still need: 1 with
    `rescale`, else the whole factor, for a caller that applies it to a smaller tensor
    further on (attention does)."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training), 1.0
    keep_levels = LEVELS - round(p * LEVELS)
    if keep_levels <= 0:
        return torch.zeros_like(x), 1.0
    scale = LEVELS / keep_levels
    keep = _keep_mask(x.shape, keep_levels)
    if rescale:
        return _ScaleByMask.apply(x, keep, scale), 1.0
    return _ScaleByMask.apply(x, keep, 1.0), scale


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    return _dropout(x, p, training)[0]


class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, attention_mask: torch.Tensor | None,
                    scaling: float | None = None, dropout: float = 0.0,
                    **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's eager attention, with `fast_dropout`'s masks on the attention probabilities.

    The (batch, heads, n, n) tensors dominate at long lengths: each pass over them took
    20-50 ms a layer at 16 x 12 x 256 x 256 on a 2-core CPU, more than the matmuls. So the
    scalings act on (n x head width) tensors instead: the query is scaled before its product
    with the keys, and dropout's 1 / (1 - p) after the product with the values. The mask is
    added in place (the product's backward does not need its output)."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        weights = weights.add_(attention_mask)
    probabilities = torch.softmax(weights, dim=-1)
    dropped, scale = _dropout(probabilities, dropout, module.training, rescale=False)
    output = torch.matmul(dropped, value)
    if scale != 1.0:
        output = output.mul_(scale)
    return output.transpose(1, 2).contiguous(), probabilities


AttentionInterface.register(ATTENTION_NAME, eager_attention)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


def use_fast_dropout(model: nn.Module) -> None:
    """Swap every plain `nn.Dropout` in `model` (adapters included) for `FastDropout`, and
    eager attention for `eager_attention` where the model type is known to match."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    base = transformers_model(model)
    config = getattr(base, "config", None)
    if (config is not None and getattr(config, "model_type", None) in ATTENTION_MODEL_TYPES
            and getattr(config, "_attn_implementation", None) == "eager"):
        base.set_attn_implementation(ATTENTION_NAME)
