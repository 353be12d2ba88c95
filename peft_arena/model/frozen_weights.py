"""Frozen linear weights held in the autocast dtype while a cell trains.

Autocast casts a linear layer's fp32 weight and bias to bf16 on every call, and caches the
cast only for weights that train, so a frozen weight (all of the base model under LoRA or IA3)
is cast again in every forward pass, every step. Holding a bf16 copy of each frozen linear
weight for the length of training gives the matmuls the very same bf16 values without the
casts. The fp32 originals are kept aside and put back afterwards, so saving, merging and
measuring see the weights the model was loaded with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _frozen_linear_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    found: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        for param in (module.weight, module.bias):
            # fp32 only: a 4-bit weight is not floating point and runs through its own kernels.
            if param is not None and not param.requires_grad and param.dtype == torch.float32:
                found[id(param)] = param
    return list(found.values())


@contextmanager
def frozen_linear_weights_in(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[int]:
    """Inside the block, every frozen fp32 linear weight and bias of `model` holds its value
    cast to `dtype` (the autocast dtype); yields how many values were cast. Without a lower
    precision (`dtype` fp32) nothing changes."""
    if dtype == torch.float32:
        yield 0
        return
    originals = {param: param.data for param in _frozen_linear_parameters(model)}
    for param, data in originals.items():
        param.data = data.to(dtype)
    try:
        yield sum(data.numel() for data in originals.values())
    finally:
        for param, data in originals.items():
            param.data = data
