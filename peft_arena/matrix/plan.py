"""Turn a preset, the chosen tasks/strategies/seeds and overrides into a list of CellSpecs.

Precedence, lowest first: CellSpec defaults < the task's max_length < the strategy's defaults
< preset `defaults` < preset `tasks.<task>` < preset `strategies.<strategy>` < command-line
flags < `--set key=value` < `--set strategy.key=value`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from peft_arena.config.presets import Preset
from peft_arena.config.spec import TRAIN_KEYS, CellSpec, coerce_setting
from peft_arena.config.tasks import resolve_task
from peft_arena.errors import UserError
from peft_arena.strategies import load_strategies
from peft_arena.strategies.base import Strategy


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it, but with '1e-3' as a number, not text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@dataclass
class Overrides:
    """What the command line sets on top of the preset."""

    flags: dict[str, Any] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)

    def parsed_sets(self) -> list[tuple[str | None, str, Any]]:
        out = []
        for item in self.sets:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--set {item!r}: write KEY=VALUE, e.g. --set lora.r=16.")
            scope, dot, name = key.strip().rpartition(".")
            out.append((scope if dot else None, name, parse_value(raw.strip())))
        return out


def _split_settings(strategy: type[Strategy], settings: dict[str, Any], origin: str
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    train, peft = {}, {}
    for key, value in settings.items():
        if key in TRAIN_KEYS:
            train[key] = coerce_setting(key, value)
        elif key in strategy.peft_fields():
            peft[key] = value
        else:
            allowed = sorted(TRAIN_KEYS | strategy.peft_fields())
            raise UserError(
                f"Unknown setting {key!r} in {origin} for strategy {strategy.name!r}; "
                f"known: {', '.join(allowed)}."
            )
    return train, peft


def _check_peft_values(strategy: type[Strategy], peft: dict[str, Any]) -> None:
    for key in ("r", "init_r", "target_r"):
        value = peft.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"{strategy.name}.{key}={value!r}: the rank must be an integer >= 1.")


def build_cells(
    preset: Preset,
    tasks: list[str],
    strategy_names: list[str],
    seeds: list[int],
    overrides: Overrides | None = None,
    model: str | None = None,
) -> list[CellSpec]:
    overrides = overrides or Overrides()
    if not tasks:
        raise UserError("The matrix is empty: name at least one task, e.g. --matrix banking77.")
    if not strategy_names:
        raise UserError("No strategies: name at least one, e.g. --strategies lora.")
    registry = load_strategies()
    sets = overrides.parsed_sets()
    selected = [registry.get(name) for name in strategy_names]
    for scope, name, _ in sets:
        if scope is not None:
            registry.get(scope)  # an unknown strategy in --set fails with a suggestion
        elif name not in TRAIN_KEYS and not any(name in s.peft_fields() for s in selected):
            raise UserError(
                f"Unknown setting {name!r} in --set; use a training setting "
                f"({', '.join(sorted(TRAIN_KEYS))}) or STRATEGY.KEY, e.g. lora.r=16."
            )
    cells = []
    for task_name in tasks:
        task = resolve_task(task_name)
        for strategy_name in strategy_names:
            strategy = registry.get(strategy_name)
            train: dict[str, Any] = {"max_length": task.max_length, **strategy.train_defaults}
            peft: dict[str, Any] = dict(strategy.peft_defaults)
            layers = [
                (preset.defaults, "preset defaults"),
                (preset.task_settings.get(task.name, {}), f"preset tasks.{task.name}"),
                (preset.strategy_settings.get(strategy_name, {}),
                 f"preset strategies.{strategy_name}"),
                ({k: v for k, v in overrides.flags.items() if v is not None}, "the command line"),
                # A bare PEFT key (--set r=16) applies to the strategies that have it.
                ({n: v for s, n, v in sets
                  if s is None and (n in TRAIN_KEYS or n in strategy.peft_fields())}, "--set"),
                ({n: v for s, n, v in sets if s == strategy_name}, f"--set {strategy_name}.*"),
            ]
            for settings, origin in layers:
                layer_train, layer_peft = _split_settings(strategy, settings, origin)
                train.update(layer_train)
                peft.update(layer_peft)
            _check_peft_values(strategy, peft)
            for seed in seeds:
                cells.append(CellSpec(
                    model=model or preset.model,
                    task=task.name,
                    strategy=strategy_name,
                    # A user's task file, local data or Hub source alike; built-ins by name.
                    task_file=(str(task.source_file)
                               if task_name.endswith((".yaml", ".yml")) else None),
                    peft=peft,
                    **{**train, "seed": int(seed)},
                ))
    return cells
