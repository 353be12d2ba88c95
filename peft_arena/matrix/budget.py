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

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import PLACEHOLDER, resolve_task
from peft_arena.data.loading import load_cell_data
from peft_arena.generation.prompts import PromptFormat, completion_ids
from peft_arena.measure.params import count_parameters
from peft_arena.model.heads import causal_lm_skeleton, check_classifiable, load_config, skeleton
from peft_arena.model.loading import load_tokenizer
from peft_arena.strategies import load_strategies
from peft_arena.train.memory_estimate import MemoryEstimate, estimate_cell_memory

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
    if task.answers_text:
        return 1  # no head to size: the answer is text
    # The task file names no labels: they come from the training data.
    return len(load_cell_data(spec, data_dir).label_names)


def count_cell_parameters(spec: CellSpec, num_labels: int, *, generative: bool = False
                          ) -> ParameterCount:
    """Trainable and total parameters the cell will train, counted on the meta device.
    `generative`: a generation task's cell, whose model keeps its LM head (no new head)."""
    strategy = load_strategies().get(spec.strategy)(spec)
    config = load_config(spec.model, num_labels=num_labels)
    if generative:
        base = causal_lm_skeleton(config)
    else:
        check_classifiable(spec.model, config)
        base = skeleton(config)
    with torch.device("meta"):  # every tensor, adapters included, is a shape without memory
        model = strategy.wrap_for_counting(base, _COUNTING_STEPS)
    trainable, total = count_parameters(model)
    return ParameterCount(trainable, total)


class _LabelCounts(dict):
    """Label count per task, read once."""

    def __init__(self, data_dir: str | Path | None) -> None:
        super().__init__()
        self.data_dir = data_dir

    def of(self, spec: CellSpec) -> int:
        key = spec.task_source
        if key not in self:
            self[key] = _label_count(spec, self.data_dir)
        return self[key]


def plan_parameters(cells: list[CellSpec], data_dir: str | Path | None = None
                    ) -> list[ParameterCount]:
    """Counts for each cell, in order; cells that differ only in seed or training settings
    share one count."""
    labels = _LabelCounts(data_dir)
    counts: dict[str, ParameterCount] = {}
    result = []
    for spec in cells:
        generative = resolve_task(spec.task_source).is_generation
        key = json.dumps([spec.model, spec.strategy, spec.peft, labels.of(spec), generative],
                         sort_keys=True, default=str)
        if key not in counts:
            counts[key] = count_cell_parameters(spec, labels.of(spec), generative=generative)
        result.append(counts[key])
    return result


def _longest_label_completion(spec: CellSpec, data_dir: str | Path | None) -> int | None:
    """A generative label task's longest answer in tokens, eos included, as the cell
    renders it; None for a free-text task (its answers' lengths are the data's)."""
    task = resolve_task(spec.task_source)
    if task.answers_text:
        return None
    names = list(task.labels) if task.labels else load_cell_data(spec, data_dir).label_names
    tokenizer = load_tokenizer(spec.model)
    chat = PromptFormat(task.prompt or PLACEHOLDER, task.system,
                        task.chat_template).uses_chat(tokenizer)
    return max(len(ids) for ids in completion_ids(tokenizer, names, chat))


def plan_memory(cells: list[CellSpec], data_dir: str | Path | None = None
                ) -> list[MemoryEstimate]:
    """The training-memory estimate of each cell, in order (peft_arena.train.memory_estimate).
    A generative cell's loss positions are its longest label's tokens per row; a free-text
    task's are every position, an upper bound."""
    labels = _LabelCounts(data_dir)
    completions: dict[tuple[str, str], int | None] = {}
    estimates: dict[str, MemoryEstimate] = {}
    for spec in cells:  # seeds of one configuration share an estimate
        if spec.config_hash() in estimates:
            continue
        generative = resolve_task(spec.task_source).is_generation
        key = (spec.model, spec.task_source)
        if generative and key not in completions:
            completions[key] = _longest_label_completion(spec, data_dir)
        estimates[spec.config_hash()] = estimate_cell_memory(
            spec, labels.of(spec), generative=generative,
            completion_tokens=completions.get(key) if generative else None)
    return [estimates[spec.config_hash()] for spec in cells]


_COUNT_SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def parse_parameter_count(value: str | int | None, option: str = "--max-trainable-params"
                          ) -> int | None:
    """'1M', '500K', '1.5M' or '1000000' as a whole number of parameters; `option` names the
    setting in the error."""
    if value is None:
        return None
    text = str(value).strip().upper().replace(",", "").replace("_", "")
    scale = _COUNT_SUFFIXES.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in _COUNT_SUFFIXES else text
    try:
        count = round(float(number) * scale)
    except (ValueError, OverflowError):  # not a number, or 'inf'
        count = 0
    if count < 1:
        raise UserError(f"{option} {value!r}: give a positive count, e.g. 1M, 500K or 1000000.")
    return count
