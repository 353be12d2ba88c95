"""AdaLoRA's hooks: LoRA whose rank budget is re-allocated across layers during training.

Its settings are the `adalora` entry of methods.yaml. Two things make or break it:
`total_step` must be the real number of optimizer steps, and `update_and_allocate` must run
after every step (the HF Trainer never calls it; without it AdaLoRA silently trains as plain
LoRA). Its training loss includes an orthogonality penalty, so compare its eval loss, not its
train loss, with other methods.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftConfig

from peft_arena.strategies.base import SearchSpace, Strategy


class AdaLoRAHooks(Strategy):
    def peft_config(self, total_steps: int) -> PeftConfig:
        assert self.peft_config_class is not None
        # Schedule as fractions of the run so it fits any length: warm up on the first 10% of
        # steps, prune ranks until 80%, then fine-tune the final pattern.
        schedule: dict[str, Any] = {
            "total_step": total_steps,
            "tinit": int(0.1 * total_steps),
            "tfinal": int(0.2 * total_steps),
            "deltaT": max(1, total_steps // 50),
        }
        params = {**self.peft_defaults, **schedule, **self.spec.peft}
        return self.peft_config_class(task_type="SEQ_CLS", **params)

    def search_space(self, space: SearchSpace) -> dict[str, Any]:
        drawn = super().search_space(space)
        if "target_r" in drawn:
            drawn["init_r"] = drawn["target_r"] * 3 // 2  # 50% above the target, as by default
        return drawn

    def on_step_end(self, model: torch.nn.Module, step: int) -> None:
        model.base_model.update_and_allocate(step)
