"""The values a strategy's `search_space` draws, from an Optuna trial or from the cell itself,
the cell those values make, and the report a trial gives its pruner.

Both the per-strategy search (tools/tune.py) and the equal-budget search of a matrix
(matrix/search.py) draw, apply and prune through these, so that a baseline trial and a drawn
one name the same settings in the same way.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from peft_arena.config.spec import TRAIN_KEYS, CellSpec

# Values Optuna can store as a parameter; anything else (a list of module names) stays as set.
_OPTUNA_SCALARS = (type(None), bool, int, float, str)


def current_settings(spec: CellSpec) -> dict[str, Any]:
    """Every setting a search space may name, at the cell's own value."""
    return {**{key: getattr(spec, key) for key in TRAIN_KEYS}, **spec.peft}


class DefaultsSpace:
    """Answers every draw with the cell's own value: the search's baseline trial.

    `params` collects those values as Optuna parameters, to enqueue them as the first trial.
    """

    def __init__(self, current: dict[str, Any], fixed: set[str] = frozenset()) -> None:
        self.current, self.fixed = current, fixed
        self.params: dict[str, Any] = {}

    def _value(self, name: str, allow_none: bool) -> Any:
        value = self.current.get(name)
        searched = name not in self.fixed and isinstance(value, _OPTUNA_SCALARS)
        if searched and (value is not None or allow_none):
            self.params[name] = value
        return value

    def float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return self._value(name, allow_none=False)  # no value: the baseline trial draws one

    def choice(self, name: str, choices: Sequence[Any]) -> Any:
        return self._value(name, allow_none=True)


class TrialSpace:
    """Draws from an Optuna trial. Settings fixed by the user are not searched, and ranges
    widen to hold the cell's own value, so that the baseline trial lies inside them."""

    def __init__(self, trial: Any, current: dict[str, Any], fixed: set[str]) -> None:
        self.trial, self.current, self.fixed = trial, current, fixed

    def _searched(self, name: str) -> bool:
        # A value Optuna cannot store (a list of module names from a preset) stays as set.
        return name not in self.fixed and isinstance(self.current.get(name), _OPTUNA_SCALARS)

    def float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if not self._searched(name):
            return self.current[name]
        value = self.current.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and (value > 0 or not log):
            low, high = min(low, value), max(high, value)
        return self.trial.suggest_float(name, low, high, log=log)

    def choice(self, name: str, choices: Sequence[Any]) -> Any:
        if not self._searched(name):
            return self.current[name]
        options = list(choices)
        if self.current.get(name) not in options:
            options.append(self.current.get(name))
        return self.trial.suggest_categorical(name, options)


def apply_settings(base: CellSpec, settings: dict[str, Any]) -> CellSpec:
    """`base` with drawn settings: training settings as fields, the rest into its PEFT config."""
    train = {k: v for k, v in settings.items() if k in TRAIN_KEYS}
    peft = {k: v for k, v in settings.items() if k not in TRAIN_KEYS}
    return dataclasses.replace(base, **train, peft={**base.peft, **peft})


def pruning_reporter(trial: Any) -> Callable[[dict[str, Any]], None]:
    """A validation-pass callback: reports validation accuracy after each pass to the Optuna
    trial, and raises TrialPruned when its pruner judges the trial hopeless."""
    import optuna

    passes = itertools.count(1)

    def report(entry: dict[str, Any]) -> None:
        index = next(passes)
        trial.report(entry["val_accuracy"], index)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {entry['val_accuracy']:.4f} after "
                                     f"pass {index} is below the median of earlier trials")

    return report
