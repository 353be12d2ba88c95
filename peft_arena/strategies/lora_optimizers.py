"""LoRA trained with optimizers of its own (`peft.optimizers`): LoRA+ (B at a higher rate than
A), LoRA-FA (A frozen, B's gradient projected) and Riemannian-preconditioned LoRA.

Each is the `lora` entry with a hook that builds the optimizer; the cell's schedule and
gradient clipping apply to it as to AdamW. The optimizers group parameters themselves, so a
cell's `head_learning_rate` does not apply to them (the head trains at the body's rate).
"""

from __future__ import annotations

import torch
from peft.optimizers import (
    create_lorafa_optimizer,
    create_loraplus_optimizer,
    create_riemannian_optimizer,
)

from peft_arena.strategies.base import Strategy


class LoraPlusHooks(Strategy):
    # lr(B) / lr(A): the LoRA+ paper's recommended 2^4.
    lr_ratio = 16.0

    def optimizer(self, model: torch.nn.Module, learning_rate: float, weight_decay: float,
                  head_learning_rate: float | None) -> torch.optim.Optimizer:
        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=learning_rate,
                                         loraplus_lr_ratio=self.lr_ratio,
                                         weight_decay=weight_decay)


class LoraFAHooks(Strategy):
    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        wrapped = super().wrap(model, total_steps)
        # LoRA-FA's optimizer freezes A when it is built; freezing here too makes the cell's
        # trainable count (taken before the optimizer) the one that trains.
        _freeze_lora_a(wrapped)
        return wrapped

    def optimizer(self, model: torch.nn.Module, learning_rate: float, weight_decay: float,
                  head_learning_rate: float | None) -> torch.optim.Optimizer:
        return create_lorafa_optimizer(model, lr=learning_rate, weight_decay=weight_decay)


class RiemannianHooks(Strategy):
    def optimizer(self, model: torch.nn.Module, learning_rate: float, weight_decay: float,
                  head_learning_rate: float | None) -> torch.optim.Optimizer:
        return create_riemannian_optimizer(model, torch.optim.AdamW, lr=learning_rate,
                                           weight_decay=weight_decay)


def _freeze_lora_a(model: torch.nn.Module) -> None:
    for name, param in model.named_parameters():
        if "lora_A" in name:
            param.requires_grad_(False)
