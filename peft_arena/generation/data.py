"""A free-text generative task's examples (`answer: text`), read, subset and split.

The rows come from the task's own train and test files (generation.examples reads either
layout); validation is carved from train and the subsets drawn with the data seed, as the
classification data are (data/loading.py), but shuffled rather than stratified: there are
no classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peft_arena.common.errors import UserError
from peft_arena.config.tasks import TaskSpec
from peft_arena.data.files import read_table
from peft_arena.generation.examples import examples_from_frame
from peft_arena.generation.prompts import Example


@dataclass
class TextSplits:
    train: list[Example]
    val: list[Example]
    test: list[Example]

    @property
    def chat_form(self) -> bool:
        return any(e.messages is not None for e in (*self.train, *self.test))


def _read(task: TaskSpec, path: Path) -> list[Example]:
    return examples_from_frame(read_table(path), str(path), prompt_column=task.prompt_column,
                               completion_column=task.completion_column,
                               messages_column=task.messages_column)


def _take(examples: list[Example], n: int, seed: int) -> tuple[list[Example], list[Example]]:
    order = np.random.default_rng(seed).permutation(len(examples))
    return [examples[i] for i in order[:n]], [examples[i] for i in order[n:]]


def load_text_task(task: TaskSpec, *, val_fraction: float, max_train_samples: int | None,
                   max_eval_samples: int | None, seed: int) -> TextSplits:
    assert task.train_file is not None and task.test_file is not None
    train, test = _read(task, task.train_file), _read(task, task.test_file)
    pool_size = len(train)
    if max_train_samples is not None:
        pool_size = min(pool_size, math.ceil(max_train_samples / (1 - val_fraction)))
    pool, _ = _take(train, pool_size, seed)
    val_size = max(1, round(val_fraction * len(pool)))
    if max_train_samples is not None:
        val_size = max(val_size, len(pool) - max_train_samples)
    val, rest = _take(pool, val_size, seed + 1)
    if len(rest) < 2:
        raise UserError(f"{task.train_file}: too few training examples ({len(train)}); "
                        f"add data.")
    if max_eval_samples is not None:
        val = _take(val, max_eval_samples, seed + 2)[0]
        test = _take(test, max_eval_samples, seed + 3)[0]
    return TextSplits(rest, val, test)
