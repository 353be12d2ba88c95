"""IA3: learned rescaling vectors on key, value and the feed-forward output."""

from __future__ import annotations

from typing import Any

from peft import IA3Config

from peft_arena.strategies.base import SearchSpace, Strategy
from peft_arena.strategies.registry import strategies


@strategies.register("ia3")
class IA3(Strategy):
    name = "ia3"
    summary = "learned scaling vectors (key, value, FFN out)"
    # IA3 barely moves at LoRA-like rates (1e-4); 5e-3 reached 0.889 on Banking77 with MiniLM.
    train_defaults = {"learning_rate": 5e-3}
    peft_config_class = IA3Config
    # None: PEFT's per-architecture defaults (key, value, output.dense with the latter as FFN).
    peft_defaults = {"target_modules": None, "feedforward_modules": None}

    def search_space(self, space: SearchSpace) -> dict[str, Any]:
        return {
            **super().search_space(space),
            # None: key, value and FFN out; all-linear scales every linear layer's output.
            "target_modules": space.choice("target_modules", [None, "all-linear"]),
        }
