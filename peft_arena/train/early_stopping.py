"""Early stopping on a validation metric, keeping the best pass's trainable weights.

Only parameters that require gradients are copied: for a PEFT method that is the adapters and
the head (a few MB); the frozen base cannot have changed between passes. Copies live in CPU
memory so that they do not count toward a GPU run's peak memory.
"""

from __future__ import annotations

from typing import Any

import torch

from peft_arena.config.spec import EARLY_STOPPING_METRICS


class EarlyStopping:
    """Feed it every validation pass; it says when to stop and restores the best weights."""

    def __init__(self, metric: str, patience: int) -> None:
        if metric not in EARLY_STOPPING_METRICS:
            raise ValueError(f"unknown early stopping metric {metric!r}")
        self.metric = metric
        self.patience = patience
        self.higher_is_better = EARLY_STOPPING_METRICS[metric]
        self.best: dict[str, Any] | None = None
        self.passes_without_gain = 0
        self._weights: dict[str, torch.Tensor] = {}

    def _improves(self, entry: dict[str, Any]) -> bool:
        if self.best is None:
            return True
        new, old = entry[self.metric], self.best[self.metric]
        # Ties keep the earlier pass: the same score with fewer steps.
        return new > old if self.higher_is_better else new < old

    def update(self, model: torch.nn.Module, entry: dict[str, Any]) -> bool:
        """Record one validation pass; True when training should stop."""
        if self._improves(entry):
            self.best = entry
            self.passes_without_gain = 0
            self._weights = {name: param.detach().to("cpu", copy=True)
                             for name, param in model.named_parameters() if param.requires_grad}
        else:
            self.passes_without_gain += 1
        return self.passes_without_gain >= self.patience

    @torch.no_grad()
    def restore(self, model: torch.nn.Module) -> None:
        """Put the best pass's trainable weights back into the model."""
        params = dict(model.named_parameters())
        for name, value in self._weights.items():
            params[name].copy_(value)
