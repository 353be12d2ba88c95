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

    def final_state(self, model: torch.nn.Module) -> dict[str, Any]:
        """The rank each adapted module ended with. PEFT keeps the last allocation as a mask
        per module's singular values (`rank_pattern`); before the first allocation (a run too
        short to reach `tinit`) every module still has its initial rank."""
        config = model.peft_config["default"]
        pattern = config.rank_pattern
        if pattern:
            ranks = {_module_name(name): int(sum(mask)) for name, mask in pattern.items()}
        else:
            ranks = {_module_name(name): int(param.shape[0])
                     for name, param in model.named_parameters() if ".lora_E." in name}
        return {"rank_pattern": dict(sorted(ranks.items(), key=lambda kv: _natural(kv[0]))),
                "init_r": config.init_r, "target_r": config.target_r,
                "reallocated": bool(pattern)}


def _module_name(parameter_name: str) -> str:
    """'base_model.model.bert.encoder.layer.0.attention.self.query.lora_E.default' ->
    'bert.encoder.layer.0.attention.self.query'."""
    name = parameter_name.split(".lora_E", 1)[0]
    return name.removeprefix("base_model.model.")


def _natural(name: str) -> list[Any]:
    # layer.2 before layer.10
    return [int(part) if part.isdigit() else part for part in name.split(".")]
