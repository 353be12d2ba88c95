"""What a strategy is: default hyper-parameters plus three hooks the runner calls.

The runner knows only this interface. Most strategies are built from an entry of
`methods.yaml` (see methods.py); a method with special needs (quantized loading, AdaLoRA's
rank budget) adds them by overriding hooks in a short module of its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from peft import PeftConfig, get_peft_model

from peft_arena.config.spec import CellSpec
from peft_arena.model.adapters import fit_to_model
from peft_arena.strategies.shapes import fit_shapes


class SearchSpace(Protocol):
    """What a strategy's `search_space` draws values from (peft_arena.tools.tune backs it with an
    Optuna trial). Names are setting names: the drawn values go straight into a preset."""

    def float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def choice(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Choice:
    """One of a list of values (a YAML list in a method's `search`)."""

    options: tuple[Any, ...]

    def draw(self, space: SearchSpace, name: str) -> Any:
        return space.choice(name, self.options)


@dataclass(frozen=True)
class FloatRange:
    """A number between two bounds (a YAML mapping `{low: .., high: .., log: ..}`)."""

    low: float
    high: float
    log: bool = False

    def draw(self, space: SearchSpace, name: str) -> float:
        return space.float(name, self.low, self.high, log=self.log)


class Strategy:
    """A fine-tuning method. Subclasses set the class variables and override hooks as needed.

    `name` is set when the class is registered, from the name it is registered under.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    # Training hyper-parameters this method wants (a learning rate that suits it, ...).
    train_defaults: ClassVar[dict[str, Any]] = {}
    # PEFT config class and the values we set on it; users override any of its fields.
    peft_config_class: ClassVar[type[PeftConfig] | None] = None
    peft_defaults: ClassVar[dict[str, Any]] = {}
    # The method's own knobs a hyper-parameter search draws, in drawing order.
    search: ClassVar[Mapping[str, Choice | FloatRange]] = {}
    # Model families (strategies.applicability) this method cannot wrap, with the reason.
    unsupported: ClassVar[dict[str, str]] = {}
    # Whether `prepare` does work (a pass over data, an SVD): the runner then times it as a
    # phase of its own.
    prepares: ClassVar[bool] = False

    def __init__(self, spec: CellSpec) -> None:
        self.spec = spec
        # Settings changed to fit the model's shapes (strategies.shapes), for the record.
        self.fitted: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ hooks

    def load_kwargs(self, precision_dtype: torch.dtype) -> dict[str, Any]:
        """Extra keyword arguments for `from_pretrained` (e.g. a quantization config)."""
        return {}

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        """Turn the loaded model into the one to train."""
        if self.peft_config_class is None:
            return model
        return get_peft_model(model, self.fitted_config(model, total_steps))

    def fitted_config(self, model: torch.nn.Module, total_steps: int) -> PeftConfig:
        """The PEFT config with targets and head filled in from `model` and shape-dependent
        settings the user left at their defaults fitted to its layers (kept in `fitted`)."""
        config = fit_to_model(self.peft_config(total_steps), model, self.name)
        chosen = {key for key, value in self.spec.peft.items()
                  if key not in self.peft_defaults or self.peft_defaults[key] != value}
        config, self.fitted = fit_shapes(config, model, self.name, chosen)
        return config

    def prepare(self, model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]
                ) -> torch.nn.Module:
        """A pass before training that a method needs (EVA's and CorDA's statistics over
        training batches, PiSSA's SVD); only called when `prepares` is set. Returns the model
        to train."""
        return model

    def optimizer(self, model: torch.nn.Module, learning_rate: float, weight_decay: float,
                  head_learning_rate: float | None) -> torch.optim.Optimizer | None:
        """An optimizer of the method's own (LoRA+, LoRA-FA); None: the cell's AdamW."""
        return None

    def wrap_for_counting(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        """`wrap` for a dry run: the model has no weights (meta device) and was built from its
        config without `load_kwargs`. A strategy whose `wrap` needs real or quantized weights
        overrides this with a wrap that yields the same parameter counts."""
        return self.wrap(model, total_steps)

    def on_step_end(self, model: torch.nn.Module, step: int) -> None:
        """Called after each optimizer step, before gradients are cleared."""

    def final_state(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """What the method decided during training that the record should keep (AdaLoRA's
        final ranks), and the settings fitted to the model's shapes; None for methods that
        decide nothing."""
        return {"fitted_settings": self.fitted} if self.fitted else None

    # ------------------------------------------------------------------ search

    def search_space(self, space: SearchSpace) -> dict[str, Any]:
        """Settings a hyper-parameter search draws, centred on this cell's own values.

        The training knobs every method shares, then the method's own `search`; subclasses
        can add more with `{**super().search_space(space), ...}`.
        """
        spec = self.spec
        epochs = math.ceil(spec.epochs)
        return {
            "learning_rate": space.float("learning_rate", spec.learning_rate / 4,
                                         spec.learning_rate * 4, log=True),
            "batch_size": space.choice("batch_size", [16, 32, 64]),
            "epochs": space.choice("epochs", sorted({max(1, epochs // 2), epochs, 2 * epochs})),
            "weight_decay": space.float("weight_decay", 0.0, 0.1),
            **{name: dimension.draw(space, name) for name, dimension in self.search.items()},
        }

    def main_knob(self) -> str | None:
        """The method's main knob: the first one its `search` lists (LoRA's rank, prompt
        tuning's virtual tokens); None for a method with none (full fine-tuning)."""
        return next(iter(self.search), None)

    def equal_budget_space(self, space: SearchSpace) -> dict[str, Any]:
        """What the equal-budget search draws for every method alike: the learning rate (a
        quarter to four times the method's default) and the method's main knob."""
        spec = self.spec
        drawn = {"learning_rate": space.float("learning_rate", spec.learning_rate / 4,
                                              spec.learning_rate * 4, log=True)}
        if (knob := self.main_knob()) is not None:
            drawn[knob] = self.search[knob].draw(space, knob)
        return drawn

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
