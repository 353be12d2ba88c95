"""Settings that depend on the shapes of the layers a method adapts, fitted to the model.

Some PEFT methods have defaults that only fit wide layers: VB-LoRA's `vector_length` must
divide every adapted layer's input and output width, C3A's `block_size` likewise, RoAd's
`group_size` the output width (in pairs), OFT's `oft_block_size` the input width; FourierFT's
and WaveFT's `n_frequency` cannot exceed a layer's number of weights, SHiRA's `r` is a budget of
`r * (in + out)` weights per layer that cannot exceed it, MiSS's `r` the input width and
PSOFT's `r` the smaller width. A cell fits each such setting the user did not set to the
nearest valid value below the default (`fit_shapes`), and the record states what changed; a
value the user set that does not fit is a one-line error instead of a crash inside PEFT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftConfig
from peft.tuners.tuners_utils import check_target_module_exists

from peft_arena.common.errors import UserError

Shape = tuple[int, int]  # (in_features, out_features) of one adapted layer


@dataclass(frozen=True)
class ShapeRule:
    """One setting of one PEFT method: whether a value fits all adapted layers, and the
    largest value up to a limit that does."""

    peft_type: str
    setting: str
    constraint: str  # said in messages and the record
    valid: Callable[[int, list[Shape]], bool]

    def fit(self, value: int, shapes: list[Shape]) -> int | None:
        """The largest valid value <= `value` (None where none is: no layer fits)."""
        return next((v for v in range(value, 0, -1) if self.valid(v, shapes)), None)


def _divides_all(value: int, widths: list[int]) -> bool:
    return all(width % value == 0 for width in widths)


RULES = (
    ShapeRule("VBLORA", "vector_length", "divides every adapted layer's input and output width",
              lambda v, s: _divides_all(v, [w for shape in s for w in shape])),
    ShapeRule("C3A", "block_size", "divides every adapted layer's input and output width",
              lambda v, s: _divides_all(v, [w for shape in s for w in shape])),
    ShapeRule("ROAD", "group_size", "is even and divides every adapted layer's output width",
              lambda v, s: v % 2 == 0 and _divides_all(v, [o for _, o in s])),
    ShapeRule("OFT", "oft_block_size", "divides every adapted layer's input width",
              lambda v, s: _divides_all(v, [i for i, _ in s])),
    ShapeRule("FOURIERFT", "n_frequency", "is at most every adapted layer's in x out",
              lambda v, s: all(v <= i * o for i, o in s)),
    ShapeRule("WAVEFT", "n_frequency", "is at most every adapted layer's in x out",
              lambda v, s: all(v <= i * o for i, o in s)),
    ShapeRule("SHIRA", "r", "keeps r x (in + out) at most in x out on every adapted layer",
              lambda v, s: all(v * (i + o) <= i * o for i, o in s)),
    ShapeRule("MISS", "r", "is at most every adapted layer's input width",
              lambda v, s: all(v <= i for i, _ in s)),
    ShapeRule("PSOFT", "r", "is at most every adapted layer's smaller width",
              lambda v, s: all(v <= min(i, o) for i, o in s)),
)


def _linear_shape(module: torch.nn.Module) -> Shape | None:
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2's linear layers store the weight (in, out)
        rows, columns = module.weight.shape
        return int(rows), int(columns)
    return None


def adapted_shapes(config: PeftConfig, model: torch.nn.Module) -> list[Shape]:
    """(in, out) of every linear layer `config` targets in `model` (before wrapping)."""
    targets = getattr(config, "target_modules", None)
    if targets is None:
        return []
    all_linear = isinstance(targets, str) and targets == "all-linear"
    head = set(getattr(config, "modules_to_save", None) or []) | {"classifier", "score"}
    shapes = []
    for name, module in model.named_modules():
        shape = _linear_shape(module)
        if shape is None or not name or name.split(".")[0] in head:
            continue
        if all_linear or check_target_module_exists(config, name):
            shapes.append(shape)
    return shapes


def fit_shapes(config: PeftConfig, model: torch.nn.Module, strategy: str,
               user_set: set[str]) -> tuple[PeftConfig, dict[str, dict[str, Any]]]:
    """`config` with each shape-dependent setting fitted to `model`'s adapted layers, and what
    changed: {setting: {"default": .., "fitted": .., "rule": ..}}. `user_set` names the
    settings the user chose: one of those that does not fit is a UserError."""
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    fitted: dict[str, dict[str, Any]] = {}
    rules = [rule for rule in RULES if rule.peft_type == peft_type]
    if not rules:
        return config, fitted
    shapes = adapted_shapes(config, model)
    if not shapes:
        return config, fitted
    for rule in rules:
        value = getattr(config, rule.setting, None)
        if not isinstance(value, int) or rule.valid(value, shapes):
            continue
        best = rule.fit(value, shapes)
        widths = sorted(set(shapes))
        if rule.setting in user_set or best is None:
            raise UserError(f"{strategy}.{rule.setting}={value} does not fit this model: it must "
                            f"be a value that {rule.constraint} (adapted layers' in x out: "
                            f"{', '.join(f'{i}x{o}' for i, o in widths[:4])}).")
        setattr(config, rule.setting, best)
        fitted[rule.setting] = {"default": value, "fitted": best, "rule": rule.constraint}
    return config, fitted

