"""What a strategy is: default hyper-parameters plus three hooks the runner calls.

The runner knows only this interface; everything special about a method (quantized loading,
AdaLoRA's rank budget) lives in the method's own short module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import torch
from peft import PeftConfig, get_peft_model

from peft_arena.config.spec import CellSpec
from peft_arena.errors import UserError


class SearchSpace(Protocol):
    """What a strategy's `search_space` draws values from (peft_arena.tools.tune backs it with an
    Optuna trial). Names are setting names: the drawn values go straight into a preset."""

    def float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def choice(self, name: str, choices: Sequence[Any]) -> Any: ...


class Strategy:
    """A fine-tuning method. Subclasses set the class variables and override hooks as needed."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # Training hyper-parameters this method wants (a learning rate that suits it, ...).
    train_defaults: ClassVar[dict[str, Any]] = {}
    # PEFT config class and the values we set on it; users override any of its fields.
    peft_config_class: ClassVar[type[PeftConfig] | None] = None
    peft_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: CellSpec) -> None:
        self.spec = spec

    # ------------------------------------------------------------------ hooks

    def load_kwargs(self, precision_dtype: torch.dtype) -> dict[str, Any]:
        """Extra keyword arguments for `from_pretrained` (e.g. a quantization config)."""
        return {}

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        """Turn the loaded model into the one to train."""
        if self.peft_config_class is None:
            return model
        return get_peft_model(model, self.peft_config(total_steps))

    def wrap_for_counting(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        """`wrap` for a dry run: the model has no weights (meta device) and was built from its
        config without `load_kwargs`. A strategy whose `wrap` needs real or quantized weights
        overrides this with a wrap that yields the same parameter counts."""
        return self.wrap(model, total_steps)

    def on_step_end(self, model: torch.nn.Module, step: int) -> None:
        """Called after each optimizer step, before gradients are cleared."""

    def final_state(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """What the method decided during training that the record should keep (AdaLoRA's
        final ranks); None for methods that decide nothing."""
        return None

    # ------------------------------------------------------------------ search

    def search_space(self, space: SearchSpace) -> dict[str, Any]:
        """Settings a hyper-parameter search draws, centred on this cell's own values.

        The training knobs every method shares; subclasses add their own with
        `{**super().search_space(space), ...}`.
        """
        spec = self.spec
        epochs = math.ceil(spec.epochs)
        return {
            "learning_rate": space.float("learning_rate", spec.learning_rate / 4,
                                         spec.learning_rate * 4, log=True),
            "batch_size": space.choice("batch_size", [16, 32, 64]),
            "epochs": space.choice("epochs", sorted({max(1, epochs // 2), epochs, 2 * epochs})),
            "weight_decay": space.float("weight_decay", 0.0, 0.1),
        }

    # ------------------------------------------------------------------ config

    def peft_config(self, total_steps: int) -> PeftConfig:
        assert self.peft_config_class is not None
        params = {**self.peft_defaults, **self.spec.peft}
        return self.peft_config_class(task_type="SEQ_CLS", **params)

    @classmethod
    def peft_fields(cls) -> set[str]:
        if cls.peft_config_class is None:
            return set()
        internal = {"task_type", "peft_type", "auto_mapping", "base_model_name_or_path",
                    "revision", "inference_mode"}
        return {f.name for f in dataclasses.fields(cls.peft_config_class)} - internal

    @classmethod
    def check_peft_params(cls, params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - cls.peft_fields())
        if unknown:
            allowed = ", ".join(sorted(cls.peft_fields())) or "none (no PEFT config)"
            raise UserError(
                f"Unknown setting {cls.name}.{unknown[0]}; settings for {cls.name}: {allowed}."
            )
