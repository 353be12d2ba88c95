"""A cell's data as training and evaluation consume it: tokenized splits, their batch orders
and their data loaders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from peft_arena.config.spec import CellSpec
from peft_arena.data.batching import (
    Collator,
    IndexDataset,
    LengthGroupedBatchSampler,
    TokenizedSplit,
    evaluation_token_budget,
    sorted_batches,
    tokenize,
)
from peft_arena.data.splits import TaskData
from peft_arena.records.schema import DataHygiene
from peft_arena.train import distributed
from peft_arena.train.loop import optimizer_steps_per_epoch

SPLITS = ("train", "val", "test")


@dataclass
class Inputs:
    """The cell's data, tokenized and batched."""

    label_names: list[str]
    splits: dict[str, TokenizedSplit]  # train, val, test
    cache_hits: list[str]  # splits whose token ids came from the cache
    tokenizer: Any
    loaders: dict[str, DataLoader]
    test_batches: list[list[int]]  # the test split's order of evaluation
    total_steps: int  # optimizer steps: the same for every split of the effective batch
    pad_id: int
    data_hygiene: DataHygiene | None  # None for a training-only cell


def loader(split: TokenizedSplit, pad_id: int, batch_sampler: Any) -> DataLoader:
    return DataLoader(IndexDataset(len(split)), batch_sampler=batch_sampler,
                      collate_fn=Collator(split, pad_id))


def train_loader(spec: CellSpec, inputs: Inputs, batch_size: int) -> DataLoader:
    """The training split in length-grouped batches of `batch_size` (seeded)."""
    split = inputs.splits["train"]
    return loader(split, inputs.pad_id,
                  LengthGroupedBatchSampler(split.lengths, batch_size, spec.seed))


def evaluation_batches(spec: CellSpec, lengths: np.ndarray) -> list[list[int]]:
    """Sorted batches, capped in padded tokens on one device. Accelerate splits every batch of
    a multi-device cell into equal shares, so there they keep one size."""
    size = spec.eval_batch_size
    budget = (evaluation_token_budget(lengths, size) if (spec.devices_per_cell or 1) == 1
              else None)
    return sorted_batches(lengths, size, budget)


def build_inputs(spec: CellSpec, data: TaskData, tokenizer: Any) -> Inputs:
    """Tokenize the three splits (through the token cache) and batch them."""
    tokenized = {name: tokenize(split.texts, split.labels, tokenizer, spec.max_length)
                 for name, split in zip(SPLITS, (data.train, data.val, data.test), strict=True)}
    splits = {name: split for name, (split, _) in tokenized.items()}
    pad_id = tokenizer.pad_token_id or 0
    test_batches = evaluation_batches(spec, splits["test"].lengths)
    loaders = {
        "train": loader(splits["train"], pad_id, LengthGroupedBatchSampler(
            splits["train"].lengths, spec.batch_size, spec.seed)),
        "val": loader(splits["val"], pad_id, distributed.SizedBatches(
            evaluation_batches(spec, splits["val"].lengths), spec.eval_batch_size)),
        "test": loader(splits["test"], pad_id, distributed.SizedBatches(
            test_batches, spec.eval_batch_size)),
    }
    total_steps = max(1, math.ceil(optimizer_steps_per_epoch(
        len(loaders["train"]), spec.gradient_accumulation_steps) * spec.epochs))
    return Inputs(data.label_names, splits, [name for name, (_, hit) in tokenized.items() if hit],
                  tokenizer, loaders, test_batches, total_steps, pad_id, data.hygiene)
