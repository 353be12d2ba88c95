"""LoHa: adapters built from Hadamard products of low-rank factors (more expressive per rank)."""

from __future__ import annotations

from typing import Any

from peft import LoHaConfig

from peft_arena.strategies.base import SearchSpace, Strategy
from peft_arena.strategies.registry import strategies


@strategies.register("loha")
class LoHa(Strategy):
    name = "loha"
    summary = "Hadamard-product low-rank adapters (r=8, q+v)"
    train_defaults = {"learning_rate": 3e-3}
    peft_config_class = LoHaConfig
    # None: PEFT's per-architecture defaults (query and value on BERT/RoBERTa, q_proj and v_proj
    # on Llama; see peft_arena/cell/adapters.py).
    peft_defaults = {"r": 8, "alpha": 16, "rank_dropout": 0.0, "module_dropout": 0.0,
                     "target_modules": None, "modules_to_save": None}

    def search_space(self, space: SearchSpace) -> dict[str, Any]:
        return {
            **super().search_space(space),
            "r": space.choice("r", [4, 8, 16]),
            "alpha": space.choice("alpha", [8, 16, 32]),
            "module_dropout": space.float("module_dropout", 0.0, 0.1),
        }
