"""The generative side of the speed benchmark: TRL's `SFTTrainer`, the usual and the tuned way.

Both recipes train on the rows the peft-arena cell trains on, in the form a TRL user gives
them: prompt and completion text (the prompt rendered through the tokenizer's chat template
and cut to `max_length` as peft-arena cuts it; TRL adds the end-of-sequence token and
tokenizes in the run). `prompt_completion_rows` checks that TRL's token ids are the cell's.
They use the same model, LoRA (or other strategy) config, learning rate, schedule, epochs,
batch size, seed and optimizer, and are scored as the cell scores: the project's batched
greedy decoding of the test prompts, parsed into labels.

- `recipe`: `SFTConfig`'s defaults for everything the comparison does not fix: completion-only
  loss (TRL's default for prompt-completion data), bf16 autocast and gradient checkpointing
  (TRL's defaults, whatever the machine), no length grouping, each batch padded to its longest
  row.
- `tuned`: what a speed-minded user changes, as far as it stays exact: no gradient
  checkpointing (a memory tool that recomputes the forward), `train_sampling_strategy=
  "group_by_length"` (transformers 5's length grouping; TRL has no option of its own), bf16
  only where peft-arena's `auto` measures it faster. Not padding-free, nor packing (TRL's
  `bfd` packing turns padding-free on): a padding-free batch is one row of the examples side
  by side with restarting position ids, which only flash attention's varlen kernels read
  (SFTConfig's docs); with SDPA on CPU attention crosses the examples, and the loss is not
  the padded batch's (tests/benchmarks/test_sft_recipes.py checks that it differs).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import PLACEHOLDER, resolve_task
from peft_arena.data.loading import load_cell_data
from peft_arena.generation.data import load_text_task
from peft_arena.generation.decode import greedy_decode
from peft_arena.generation.examples import label_examples
from peft_arena.generation.prompts import Encoded, PromptFormat, completion_ids, encode
from peft_arena.generation.scoring import label_scores, parse_labels, text_scores
from peft_arena.model.loading import load_causal_lm, load_tokenizer
from peft_arena.strategies import load_strategies
from peft_arena.train.optim import build_optimizer
from peft_arena.train.precision import resolve_precision

# Rows decoded at once, as the cell decodes (cell/generative.py).
DECODE_BATCH = 64


@dataclass
class GenerativeData:
    """A generative cell's train and test examples, tokenized as the cell tokenizes them."""

    tokenizer: Any
    train: Encoded
    test: Encoded
    label_names: list[str]  # empty for a free-text task
    test_labels: np.ndarray | None  # label id per test example; None for free text
    max_new_tokens: int


def load_generative_data(spec: CellSpec, data_dir: Path | None) -> GenerativeData:
    """The cell's train and test splits (the same rows, subsets and truncation)."""
    task = resolve_task(spec.task_source)
    if task.answers_text:
        text = load_text_task(task, val_fraction=spec.val_fraction,
                              max_train_samples=spec.max_train_samples,
                              max_eval_samples=spec.max_eval_samples, seed=spec.data_seed)
        rows, label_names, test_labels = {"train": text.train, "test": text.test}, [], None
    else:
        data = load_cell_data(spec, data_dir)
        label_names = data.label_names
        rows = {name: label_examples(split.texts, split.labels, label_names)
                for name, split in (("train", data.train), ("test", data.test))}
        test_labels = np.asarray(data.test.labels)
    tokenizer = load_tokenizer(spec.model)
    fmt = PromptFormat(task.prompt or PLACEHOLDER, task.system, task.chat_template)
    splits = {name: encode(examples, fmt, tokenizer, spec.max_length, where=name)
              for name, examples in rows.items()}
    answers = (completion_ids(tokenizer, label_names, splits["train"].chat) if label_names
               else splits["train"].completion_ids + splits["test"].completion_ids)
    return GenerativeData(tokenizer, splits["train"], splits["test"], label_names, test_labels,
                          max(len(ids) for ids in answers))


def prompt_completion_rows(data: GenerativeData) -> dict[str, list[str]]:
    """The training split as TRL's prompt-completion text. The prompt is the cell's own
    (decoded from its ids, so the chat template and any cut are the same), less a
    beginning-of-text token the tokenizer adds again; the completion is the answer text,
    to which TRL appends the end-of-sequence token."""
    tokenizer, train = data.tokenizer, data.train
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [bos]
    prompts = []
    for ids in train.prompt_ids:
        ids = ids[1:] if adds_bos and len(ids) and ids[0] == bos else ids
        prompts.append(tokenizer.decode(ids, skip_special_tokens=False))
    completions = [tokenizer.decode(ids[:-1], skip_special_tokens=False)
                   for ids in train.completion_ids]
    return {"prompt": prompts, "completion": completions}


def sft_config(spec: CellSpec, tuned: bool, output_dir: str, total_steps: int) -> Any:
    from trl import SFTConfig

    fixed = dict(  # what every side shares
        output_dir=output_dir, per_device_train_batch_size=spec.batch_size,
        num_train_epochs=spec.epochs, learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay, warmup_steps=int(spec.warmup_ratio * total_steps),
        lr_scheduler_type=spec.lr_scheduler, max_grad_norm=spec.max_grad_norm, seed=spec.seed,
        report_to="none", save_strategy="no", eval_strategy="no", use_cpu=True,
        disable_tqdm=True)
    if not tuned:
        return SFTConfig(**fixed)
    precision = resolve_precision(spec.precision)
    return SFTConfig(**fixed, gradient_checkpointing=False,
                     train_sampling_strategy="group_by_length",
                     bf16=precision.name == "bf16", fp16=precision.name == "fp16")


def sft_trainer(spec: CellSpec, data: GenerativeData, tuned: bool, output_dir: str) -> Any:
    """An `SFTTrainer` over the cell's training rows, the model loaded and wrapped by the
    cell's strategy (its PEFT config fitted to the model as the cell fits it)."""
    from datasets import Dataset
    from trl import SFTTrainer

    steps = int(np.ceil(len(data.train) / spec.batch_size) * spec.epochs)
    torch.manual_seed(spec.seed)  # before the adapters draw their initial weights
    strategy = load_strategies().get(spec.strategy)(spec)
    # transformers' default attention (SDPA) and fp32 weights, as a TRL user loads them.
    model = load_causal_lm(spec.model, on_gpu=False, attention="sdpa",
                           pad_token_id=data.tokenizer.pad_token_id,
                           **strategy.load_kwargs(resolve_precision(spec.precision)
                                                  .compute_dtype))
    model = strategy.wrap(model, steps)
    # peft-arena's optimizer (fused AdamW), so every side trains with the same one.
    optimizer = build_optimizer(model, spec.learning_rate, spec.weight_decay,
                                spec.head_learning_rate)
    return SFTTrainer(model=model, args=sft_config(spec, tuned, output_dir, steps),
                      train_dataset=Dataset.from_dict(prompt_completion_rows(data)),
                      processing_class=data.tokenizer, optimizers=(optimizer, None))


def same_tokens(trainer: Any, data: GenerativeData) -> int:
    """Training rows whose TRL token ids or loss positions differ from the cell's."""
    differ = 0
    for row, prompt, completion in zip(trainer.train_dataset, data.train.prompt_ids,
                                       data.train.completion_ids, strict=True):
        ids = np.concatenate([prompt, completion])
        labels = np.asarray(row["labels"])
        differ += not (np.array_equal(np.asarray(row["input_ids"]), ids)
                       and np.array_equal(labels != -100, np.arange(len(ids)) >= len(prompt)))
    return differ


def score_test_split(model: torch.nn.Module, data: GenerativeData, eval_batch_size: int
                     ) -> tuple[dict[str, float], float]:
    """(scores, decoding seconds) of the test split, decoded and parsed as the cell does."""
    decoded = greedy_decode(model, data.tokenizer, data.test.prompt_ids,
                            max_new_tokens=data.max_new_tokens,
                            batch_size=min(eval_batch_size, DECODE_BATCH))
    if data.test_labels is not None:
        predicted = parse_labels(decoded.texts, data.label_names)
        return label_scores(data.test_labels, predicted, len(data.label_names)), decoded.seconds
    scores = text_scores(decoded.texts, data.test.answers)
    return {"accuracy": scores["exact_match"], **scores}, decoded.seconds


def run_sft(spec: CellSpec, data_dir: Path | None, tuned: bool) -> dict[str, Any]:
    """One TRL side, timed from reading the task's files to test metrics."""
    began = time.perf_counter()
    data = load_generative_data(spec, data_dir)
    with tempfile.TemporaryDirectory() as out:
        trainer = sft_trainer(spec, data, tuned, out)
        differ = same_tokens(trainer, data)
        if differ:
            raise SystemExit(f"{differ} of {len(data.train)} TRL training rows differ from "
                             f"the cell's tokens; the sides would not train on the same data")
        train_began = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - train_began
        scores, decode_seconds = score_test_split(trainer.model, data, spec.eval_batch_size)
    return {"seconds": time.perf_counter() - began, "accuracy": scores["accuracy"],
            "train_seconds": train_seconds, "test_seconds": decode_seconds}
