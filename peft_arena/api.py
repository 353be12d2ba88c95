"""The library API the CLI calls; usable from Python too.

    from peft_arena import api
    cells = api.plan_cells(tasks=["banking77"], strategies=["lora", "ia3"])
    result = api.run(cells, results_dir="results", data_dir="data",
                     executor=api.executor_settings(name="ray"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft_arena.cell.memory_estimate import MemoryEstimate
from peft_arena.config.presets import DEFAULT_PRESET, available_presets, load_preset
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import builtin_tasks
from peft_arena.matrix import budget
from peft_arena.matrix.budget import ParameterCount
from peft_arena.matrix.execute import MatrixResult, run_matrix
from peft_arena.matrix.executors import ExecutorSettings
from peft_arena.matrix.plan import Overrides, build_cells
from peft_arena.strategies import applicability, load_strategies


def plan_cells(
    tasks: list[str] | None = None,
    strategies: list[str] | None = None,
    *,
    model: str | None = None,
    preset: str = DEFAULT_PRESET,
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> list[CellSpec]:
    """Every cell of the matrix, fully resolved. Unset arguments come from the preset."""
    loaded = load_preset(preset)
    return build_cells(
        loaded,
        tasks if tasks is not None else loaded.tasks,
        strategies if strategies is not None else loaded.strategies,
        seeds if seeds is not None else loaded.seeds,
        Overrides(flags=flags or {}, sets=sets or []),
        model=model,
    )


def plan_parameters(cells: list[CellSpec], data_dir: str | Path | None = None
                    ) -> list[ParameterCount]:
    """Trainable and total parameters of each cell, from the models' configs alone (no
    weights are loaded or allocated). `data_dir` is read only for tasks that name no labels."""
    return budget.plan_parameters(cells, data_dir)


def executor_settings(preset: str = DEFAULT_PRESET, **overrides: Any) -> ExecutorSettings:
    """Where cells run: the preset's `executor:` section, then `overrides` (name, workers,
    ray_address, slurm={partition, time_min, ...}) that are not None."""
    return ExecutorSettings.from_preset(load_preset(preset).executor, **overrides)


def plan_memory(cells: list[CellSpec], data_dir: str | Path | None = None
                ) -> list[MemoryEstimate]:
    """An estimate of each cell's training memory from the models' configs alone: weights by
    dtype and quantization, gradients and AdamW states, activations with and without gradient
    checkpointing (peft_arena.cell.memory_estimate says what it counts)."""
    return budget.plan_memory(cells, data_dir)


def run(cells: list[CellSpec], results_dir: str | Path = "results",
        data_dir: str | Path | None = None, retry_failed: bool = False,
        executor: ExecutorSettings | None = None) -> MatrixResult:
    return run_matrix(cells, results_dir, data_dir, retry_failed=retry_failed,
                      executor=executor)


def strategy_infos() -> list[dict[str, Any]]:
    registry = load_strategies()
    infos = []
    for name in registry.names():
        strategy = registry.get(name)
        learning_rate = strategy.train_defaults.get("learning_rate",
                                                    CellSpec.__dataclass_fields__[
                                                        "learning_rate"].default)
        peft = ", ".join(f"{k}={v}" for k, v in strategy.peft_defaults.items() if v is not None)
        infos.append({"name": name, "summary": strategy.summary, "learning_rate": learning_rate,
                      "peft_defaults": peft or "-",
                      "peft_type": (strategy.peft_config_class.__name__.removesuffix("Config")
                                    if strategy.peft_config_class else None),
                      "families": applicability.families(strategy),
                      "does_not_apply": dict(strategy.unsupported)})
    return infos


def inapplicable_infos() -> list[dict[str, Any]]:
    """PEFT methods that wrap no sequence classifier, and strategies that skip a family."""
    infos: list[dict[str, Any]] = [{"name": name, "families": [], "reason": reason}
                                   for name, reason in applicability.NOT_STRATEGIES.items()]
    registry = load_strategies()
    for name in registry.names():
        for family, reason in registry.get(name).unsupported.items():
            infos.append({"name": name, "families": [family], "reason": reason})
    return infos


def task_infos() -> list[dict[str, Any]]:
    infos = []
    for name in builtin_tasks().names():
        task = builtin_tasks().get(name)
        infos.append({"name": name, "labels": len(task.labels or ()),
                      "max_length": task.max_length,
                      "hub": task.hub.path if task.hub else "-"})
    return infos


def preset_names() -> list[str]:
    return available_presets()
