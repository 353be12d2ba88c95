"""Turn a preset, the chosen tasks/strategies/seeds and overrides into a list of CellSpecs.

Precedence, lowest first: CellSpec defaults < the task's max_length < the strategy's defaults
< preset `defaults` < preset `tasks.<task>` < preset `models.<model>.defaults` < preset
`strategies.<strategy>` < preset `models.<model>.strategies.<strategy>` < command-line flags
< `--set key=value` < `--set strategy.key=value`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from peft_arena.common.errors import UserError
from peft_arena.config.presets import ModelSection, Preset
from peft_arena.config.spec import TRAIN_KEYS, CellSpec, coerce_setting
from peft_arena.config.tasks import DATA_SETTINGS, TaskSpec, resolve_task
from peft_arena.model.heads import load_config
from peft_arena.strategies import applicability, load_strategies
from peft_arena.strategies.base import Strategy

# Names people reach for, and the setting they mean (offered when the setting exists).
_ALIASES = {
    "rank": "r", "lr": "learning_rate", "alpha": "lora_alpha", "dropout": "lora_dropout",
    "bs": "batch_size", "batch": "batch_size", "epoch": "epochs", "wd": "weight_decay",
    "warmup": "warmup_ratio", "max_len": "max_length", "seq_len": "max_length",
    "max_seq_length": "max_length", "target": "target_modules", "targets": "target_modules",
}
# The training settings an unknown-key error lists; the rest are in docs/settings.md.
COMMON_TRAIN_KEYS = ("learning_rate", "epochs", "batch_size", "max_length",
                     "max_train_samples", "max_eval_samples")


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


def unknown_setting_message(key: str, origin: str, strategies: list[type[Strategy]]) -> str:
    """One line: the unknown key, the setting it most likely means, then a short list of
    known settings (a PEFT config has dozens of fields; listing them all helps nobody)."""
    known = set(TRAIN_KEYS).union(*(s.peft_fields() for s in strategies))
    guess = _ALIASES.get(key.lower())
    if guess not in known:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        guess = close[0] if close else None
    hint = f" Did you mean {guess!r}?" if guess else ""
    groups = [f"Common settings: {', '.join(COMMON_TRAIN_KEYS)}"]
    groups += [f"for {s.name}: {', '.join(s.peft_defaults)} or any other "
               f"{s.peft_config_class.__name__} field"
               for s in strategies if s.peft_config_class is not None]
    return (f"Unknown setting {key!r} in {origin}.{hint} {'; '.join(groups)} "
            f"(every setting: docs/settings.md).")


def _split_settings(strategy: type[Strategy], settings: dict[str, Any], origin: str
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    train, peft = {}, {}
    for key, value in settings.items():
        if key in TRAIN_KEYS:
            train[key] = coerce_setting(key, value)
        elif key in strategy.peft_fields():
            peft[key] = value
        else:
            raise UserError(unknown_setting_message(key, f"{origin} for strategy "
                                                         f"{strategy.name!r}", [strategy]))
    return train, peft


def _data_settings(task: TaskSpec, train: dict[str, Any]) -> dict[str, Any]:
    """A run's data settings, left unset (None) where they only repeat the defaults of a task
    that keeps them, so that spelling a default out does not make a new cell."""
    out = {}
    for key, default in DATA_SETTINGS.items():
        value = train.get(key)
        keeps_default = getattr(task, key) == default
        out[key] = None if value is None or (value == default and keeps_default) else value
    return out


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
    applicability.refuse_not_strategies(strategy_names)
    selected = [registry.get(name) for name in strategy_names if name != applicability.ALL]
    for scope, name, _ in sets:
        if scope is not None:
            registry.get(scope)  # an unknown strategy in --set fails with a suggestion
        elif name not in TRAIN_KEYS and not any(name in s.peft_fields() for s in selected):
            raise UserError(unknown_setting_message(name, "--set", selected))
    cells = []
    for model_name, section, model_tasks, model_strategies in _models_to_run(
            preset, model, tasks, strategy_names):
        cells += _model_cells(preset, model_name, section, model_tasks, model_strategies, seeds,
                              overrides, sets)
    return cells


def _family(model: str) -> str | None:
    """The model's family (strategies.applicability); None where its config cannot be read
    here (a missing model fails later, with its own message)."""
    try:
        return applicability.family_of(load_config(model).model_type)
    except (UserError, OSError, ValueError):
        return None


def _models_to_run(preset: Preset, model: str | None, tasks: list[str],
                   strategy_names: list[str]
                   ) -> list[tuple[str, ModelSection, list[str], list[str]]]:
    """(model, its preset section, its tasks, its strategies) for each model of the matrix. A
    `models:` preset runs each model's own tasks and strategies among `tasks` and
    `strategy_names`; a task or strategy that no model lists runs on every model. `model`
    (--model) replaces the preset's models, keeping the section of the same name where there
    is one, and runs every task and strategy asked for."""
    if model is not None or not preset.models:
        name = model or preset.model
        return [(name, preset.models.get(name, ModelSection()), tasks, strategy_names)]
    listed_strategies = {s for section in preset.models.values() for s in section.strategies}
    listed_tasks = {t for section in preset.models.values() for t in section.tasks}
    runs = []
    for name, section in preset.models.items():
        chosen = [s for s in strategy_names
                  if s in section.strategies or s not in listed_strategies]
        own_tasks = [t for t in tasks
                     if not section.tasks or t in section.tasks or t not in listed_tasks]
        if chosen and own_tasks:
            runs.append((name, section, own_tasks, chosen))
    if not runs and listed_tasks:
        raise UserError(f"No model of preset {preset.name!r} runs both a task of "
                        f"{', '.join(tasks)} and a strategy of {', '.join(strategy_names)}: "
                        f"each model lists its own (models.<model>.tasks and .strategies); "
                        f"name others, or one model with --model.")
    return runs


def _model_cells(preset: Preset, model: str, section: ModelSection, tasks: list[str],
                 strategy_names: list[str], seeds: list[int], overrides: Overrides,
                 sets: list[tuple[str | None, str, Any]]) -> list[CellSpec]:
    registry = load_strategies()
    strategy_names = applicability.for_model(strategy_names, registry, model, _family)
    cells = []
    for task_name in tasks:
        task = resolve_task(task_name)
        for strategy_name in strategy_names:
            strategy = registry.get(strategy_name)
            train: dict[str, Any] = {"max_length": task.max_length,
                                     **task.changed_data_settings(),
                                     **strategy.train_defaults}
            peft: dict[str, Any] = dict(strategy.peft_defaults)
            layers = [
                (preset.defaults, "preset defaults"),
                (preset.task_settings.get(task.name, {}), f"preset tasks.{task.name}"),
                (section.defaults, f"preset models.{model}.defaults"),
                (preset.strategy_settings.get(strategy_name, {}),
                 f"preset strategies.{strategy_name}"),
                (section.strategy_settings.get(strategy_name, {}),
                 f"preset models.{model}.strategies.{strategy_name}"),
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
            train.update(_data_settings(task, train))
            for seed in seeds:
                cells.append(CellSpec(
                    model=model,
                    task=task.name,
                    strategy=strategy_name,
                    # A user's task file, local data or Hub source alike; built-ins by name.
                    task_file=(str(task.source_file)
                               if task_name.endswith((".yaml", ".yml")) else None),
                    peft=peft,
                    **{**train, "seed": int(seed)},
                ))
    return cells
