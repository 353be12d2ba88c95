"""Parameter counts: what a cell trains and holds, with 4-bit weights counted honestly."""

from __future__ import annotations

import torch


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total), with 4-bit weights counted as the unquantized values they hold."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()  # PEFT knows packed 4-bit
        return int(trainable), int(total)
    trainable = total = 0
    for param in model.parameters():
        count = parameter_numel(param)
        total += count
        trainable += count if param.requires_grad else 0
    return trainable, total


def parameter_numel(param: torch.Tensor) -> int:
    """How many values a parameter holds: a packed 4-bit weight stores two per byte."""
    count = param.numel()
    return count * 2 if param.__class__.__name__ == "Params4bit" else count
