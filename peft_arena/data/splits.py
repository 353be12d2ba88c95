"""A task's data as splits of texts and label ids: validation carved from train, and seeded
subsets stratified by class (the test split is kept whole unless capped)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from peft_arena.common.errors import UserError


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TaskData:
    train: Split
    val: Split
    test: Split
    label_names: list[str]
    # The record's data-hygiene section (see data/hygiene.py), when asked for.
    hygiene: dict[str, Any] | None = field(default=None, compare=False)


def stratified_take(split: Split, n: int, seed: int) -> tuple[Split, Split]:
    """(taken, rest): n examples drawn with class proportions kept where possible."""
    if n >= len(split):
        return split, Split([], split.labels[:0])
    index = np.arange(len(split))
    try:
        taken, rest = train_test_split(index, train_size=n, random_state=seed,
                                       stratify=split.labels)
    except ValueError:  # a class too small to stratify, or n below the class count
        taken, rest = train_test_split(index, train_size=n, random_state=seed, shuffle=True)
    return subset(split, taken), subset(split, rest)


def subset(split: Split, index: np.ndarray) -> Split:
    return Split([split.texts[i] for i in index], split.labels[index])


def check_classes(train: Split, names: list[str], origin: str) -> None:
    missing = sorted(set(range(len(names))) - set(np.unique(train.labels).tolist()))
    if missing:
        raise UserError(
            f"{origin}: class {names[missing[0]]!r} has no training example"
            f"{' (after subsetting)' if len(missing) < len(names) else ''}; "
            f"add examples or raise --max-train-samples."
        )


def split_task_data(
    train: Split,
    test: Split,
    label_names: list[str],
    *,
    val_fraction: float,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    seed: int,
    origin: str,
) -> TaskData:
    """Carve validation from train and take seeded, stratified subsets."""
    pool_size = len(train)
    if max_train_samples is not None:
        pool_size = min(pool_size, math.ceil(max_train_samples / (1 - val_fraction)))
    pool, _ = stratified_take(train, pool_size, seed)
    val_size = max(1, round(val_fraction * len(pool)))
    if max_train_samples is not None:
        # Rounding must not leave one example more than asked for in train.
        val_size = max(val_size, len(pool) - max_train_samples)
    val, rest = stratified_take(pool, val_size, seed + 1)
    if len(rest) < 2:
        raise UserError(f"{origin}: too few training examples ({len(train)}); add data.")
    if max_eval_samples is not None:
        val, _ = stratified_take(val, max_eval_samples, seed + 2)
        test, _ = stratified_take(test, max_eval_samples, seed + 3)
    check_classes(rest, label_names, origin)
    return TaskData(train=rest, val=val, test=test, label_names=label_names)
