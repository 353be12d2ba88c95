"""The optimizer of a cell: AdamW over the trainable parameters, with the classification head
optionally at a learning rate of its own.

A freshly initialised head over many classes (Banking77's 77) learns far slower than the
pretrained body needs to move; a separate head rate lets full fine-tuning and LoRA keep the
body's rate that suits them.
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from peft_arena.model.heads import head_module_names
from peft_arena.model.loading import transformers_model

# What get_peft_model puts before the transformers model's own parameter names.
_PEFT_PREFIX = "base_model.model."


def is_head_parameter(name: str, head_names: Collection[str]) -> bool:
    """Whether a parameter belongs to the head, whose top-level module names are
    `head_names` (BERT and RoBERTa: classifier; DistilBERT: pre_classifier + classifier;
    decoders: score). PEFT's trainable copy keeps the name (`score.modules_to_save.default`)."""
    return name.removeprefix(_PEFT_PREFIX).split(".", 1)[0] in head_names


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                    head_learning_rate: float | None = None) -> torch.optim.AdamW:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if head_learning_rate is None:
        groups = [{"params": [p for _, p in trainable]}]
    else:
        head_names = head_module_names(transformers_model(model))
        head = [p for n, p in trainable if is_head_parameter(n, head_names)]
        body = [p for n, p in trainable if not is_head_parameter(n, head_names)]
        groups = [g for g in ({"params": body}, {"params": head, "lr": head_learning_rate})
                  if g["params"]]
    return torch.optim.AdamW(
        groups, lr=learning_rate, weight_decay=weight_decay,
        # One fused kernel instead of a dozen per tensor: ~10% of a full fine-tuning step on
        # CPU. It needs every trainable tensor to be floating point.
        fused=all(p.is_floating_point() for _, p in trainable),
    )
