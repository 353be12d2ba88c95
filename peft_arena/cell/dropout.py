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

from peft_arena.cell.modeling import transformers_model

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
    a scale of 1 is left out (attention applies it to a smaller tensor)."""

    # `torch.where` reads the boolean mask as it is; `x * keep` would first copy it into a
    # float tensor the size of `x` (a third of this function's time at 16 x 12 x 256 x 256).
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


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    keep_levels = LEVELS - round(p * LEVELS)
    if keep_levels <= 0:
        return torch.zeros_like(x)
    return _ScaleByMask.apply(x, _keep_mask(x.shape, keep_levels), LEVELS / keep_levels)


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
    keep_levels = LEVELS - round(dropout * LEVELS)
    if not module.training or dropout == 0.0 or query.device.type != "cpu":
        output = torch.matmul(
            nn.functional.dropout(probabilities, dropout, module.training), value)
    elif keep_levels <= 0:
        output = torch.zeros_like(torch.matmul(probabilities, value))
    else:
        keep = _keep_mask(probabilities.shape, keep_levels)
        output = torch.matmul(_ScaleByMask.apply(probabilities, keep, 1.0), value).mul_(
            LEVELS / keep_levels)
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
