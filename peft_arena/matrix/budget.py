"""Parameter counts of planned cells, without weights and without training.

Each model is built from its config alone on PyTorch's meta device (shapes, no memory), then
wrapped by its strategy's `wrap_for_counting` hook. A folder holding only config.json and the
tokenizer files is enough, so a user can size roberta-large before downloading it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from peft_arena.cell.data import load_cell_data
from peft_arena.config.presets import resolve_model_path
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.errors import UserError
from peft_arena.measure.params import count_parameters
from peft_arena.strategies import load_strategies

# Parameter counts do not depend on the length of the schedule; strategies whose config needs
# one (AdaLoRA's rank budget) only need a valid value to build.
_COUNTING_STEPS = 100


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def _label_count(spec: CellSpec, data_dir: str | Path | None) -> int:
    task = resolve_task(spec.task_source)
    if task.labels:
        return len(task.labels)
    # The task file names no labels: they come from the training data.
    return len(load_cell_data(spec, data_dir).label_names)


def _config(model: str, num_labels: int):
    try:
        return AutoConfig.from_pretrained(resolve_model_path(model), num_labels=num_labels,
                                          trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Could not read the config of model {model!r} ({str(exc).splitlines()[0]}); "
            f"give a folder with a config.json or a Hub id you can reach."
        ) from None


def count_cell_parameters(spec: CellSpec, num_labels: int) -> ParameterCount:
    """Trainable and total parameters the cell will train, counted on the meta device."""
    strategy = load_strategies().get(spec.strategy)(spec)
    config = _config(spec.model, num_labels)
    with torch.device("meta"):  # every tensor, adapters included, is a shape without memory
        model = AutoModelForSequenceClassification.from_config(config,
                                                               attn_implementation="eager")
        model = strategy.wrap_for_counting(model, _COUNTING_STEPS)
    trainable, total = count_parameters(model)
    return ParameterCount(trainable, total)


def plan_parameters(cells: list[CellSpec], data_dir: str | Path | None = None
                    ) -> list[ParameterCount]:
    """Counts for each cell, in order; cells that differ only in seed or training settings
    share one count."""
    labels: dict[str, int] = {}
    counts: dict[str, ParameterCount] = {}
    result = []
    for spec in cells:
        task_key = spec.task_source
        if task_key not in labels:
            labels[task_key] = _label_count(spec, data_dir)
        key = json.dumps([spec.model, spec.strategy, spec.peft, labels[task_key]],
                         sort_keys=True, default=str)
        if key not in counts:
            counts[key] = count_cell_parameters(spec, labels[task_key])
        result.append(counts[key])
    return result
