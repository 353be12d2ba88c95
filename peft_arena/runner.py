"""One cell, start to end: data -> tokens -> model -> strategy -> train -> evaluate -> record.

The runner knows the `Strategy` interface only; it never asks which strategy it runs.
It is meant to run in a process of its own (see matrix.py) so that peak memory is the cell's.
"""

from __future__ import annotations

import datetime as dt
import math
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from peft_arena.batching import (
    Collator,
    IndexDataset,
    LengthGroupedBatchSampler,
    TokenizedSplit,
    sorted_batches,
    tokenize,
)
from peft_arena.data import load_task_data, resolve_data_dir
from peft_arena.loop import evaluate, train_epochs
from peft_arena.measure import GpuMemoryPoller, PhaseTimer, memory_report
from peft_arena.modeling import count_parameters, load_model, load_tokenizer
from peft_arena.precision import resolve_precision
from peft_arena.provenance import environment
from peft_arena.spec import CellSpec
from peft_arena.store import SCHEMA_VERSION, write_record
from peft_arena.strategies import load_strategies
from peft_arena.tasks import resolve_task


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _loader(split: TokenizedSplit, pad_id: int, batch_sampler: Any) -> DataLoader:
    return DataLoader(IndexDataset(len(split)), batch_sampler=batch_sampler,
                      collate_fn=Collator(split, pad_id))


def run_cell(spec: CellSpec, data_dir: str | Path | None = None,
             timer: PhaseTimer | None = None) -> dict[str, Any]:
    """Run one cell and return its record (status "ok"); exceptions propagate to the caller,
    and `timer.current` then names the phase that failed."""
    timer = timer or PhaseTimer()
    started = _now()
    precision = resolve_precision(spec.precision)
    accelerator = Accelerator(mixed_precision=precision.accelerate_name,
                              cpu=not torch.cuda.is_available())
    on_gpu = accelerator.device.type == "cuda"
    poller = GpuMemoryPoller(accelerator.device.index or 0) if on_gpu else None
    strategy = load_strategies().get(spec.strategy)(spec)
    with poller or nullcontext():
        with timer.phase("data"):
            task = resolve_task(spec.task_file or spec.task)
            data = load_task_data(task, resolve_data_dir(data_dir), val_fraction=spec.val_fraction,
                                  max_train_samples=spec.max_train_samples,
                                  max_eval_samples=spec.max_eval_samples, seed=spec.data_seed)
        with timer.phase("tokenize"):
            tokenizer = load_tokenizer(spec.model)
            splits = {name: tokenize(split.texts, split.labels, tokenizer, spec.max_length)
                      for name, split in (("train", data.train), ("val", data.val),
                                          ("test", data.test))}
            train, val, test = (splits[n][0] for n in ("train", "val", "test"))
        pad_id = tokenizer.pad_token_id or 0
        train_loader = _loader(train, pad_id,
                               LengthGroupedBatchSampler(train.lengths, spec.batch_size, spec.seed))
        val_loader = _loader(val, pad_id, sorted_batches(val.lengths, spec.eval_batch_size))
        test_loader = _loader(test, pad_id, sorted_batches(test.lengths, spec.eval_batch_size))
        total_steps = max(1, math.ceil(len(train_loader) * spec.epochs))

        with timer.phase("model"):
            set_seed(spec.seed)  # before the head and the adapters draw their initial weights
            model = load_model(spec.model, data.label_names, on_gpu=on_gpu,
                               **strategy.load_kwargs(precision.compute_dtype))
            model = strategy.wrap(model, total_steps)
            trainable, total = count_parameters(model)
            trainable_params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(
                trainable_params, lr=spec.learning_rate, weight_decay=spec.weight_decay,
                # One fused kernel instead of a dozen per tensor: ~10% of a full fine-tuning
                # step on CPU. It needs every trainable tensor to be floating point.
                fused=all(p.is_floating_point() for p in trainable_params),
            )
            scheduler = get_scheduler(spec.lr_scheduler, optimizer,
                                      num_warmup_steps=int(spec.warmup_ratio * total_steps),
                                      num_training_steps=total_steps)
            model, optimizer, train_loader, val_loader, test_loader, scheduler = (
                accelerator.prepare(model, optimizer, train_loader, val_loader, test_loader,
                                    scheduler))

        with timer.phase("train"):
            history, train_samples, train_tokens = train_epochs(
                model, strategy, optimizer, scheduler, train_loader, val_loader, accelerator,
                spec, total_steps)
        with timer.phase("eval"):
            result = evaluate(model, test_loader, accelerator, "test")
    phases = timer.phases
    record = {
        "schema_version": SCHEMA_VERSION,
        "cell_id": spec.cell_id,
        "status": "ok",
        "spec": spec.to_dict(),
        "resolved": {
            "model_path": str(getattr(model, "name_or_path", "")) or spec.model,
            "peft_config": _peft_config(accelerator.unwrap_model(model)),
            "precision": precision.name,
            "attn_implementation": _attn(accelerator.unwrap_model(model)),
            "train_examples": len(train), "val_examples": len(val), "test_examples": len(test),
            "label_names": data.label_names,
            "total_steps": total_steps,
            "tokenize_cache_hits": [name for name, (_, hit) in splits.items() if hit],
            "data_fingerprint": {n: s.fingerprint() for n, s in (("train", train), ("val", val),
                                                                  ("test", test))},
        },
        "metrics": {"accuracy": result.accuracy, "macro_f1": result.macro_f1,
                    "eval_loss": result.loss,
                    "val_accuracy": history[-1]["val_accuracy"] if history else None,
                    "val_macro_f1": history[-1]["val_macro_f1"] if history else None},
        "params": {"trainable": trainable, "total": total,
                   "trainable_pct": 100.0 * trainable / total},
        "time": {
            "total_s": timer.total(),
            "phases": phases,
            "train_samples_per_s": train_samples / phases["train_s"],
            "train_tokens_per_s": train_tokens / phases["train_s"],
            "eval_samples_per_s": result.samples / phases["eval_s"],
            "eval_tokens_per_s": result.tokens / phases["eval_s"],
        },
        "memory": {**memory_report(poller), "batch_size": spec.batch_size,
                   "max_length": spec.max_length},
        "history": history,
        "error": None,
        "environment": environment(precision.name),
        "started_at": started,
        "finished_at": _now(),
    }
    return record


def _peft_config(model: torch.nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        return None
    data = config.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()
            if k != "rank_pattern"}


def _attn(model: torch.nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def failed_record(spec: CellSpec, exc: BaseException, phase: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": spec.cell_id,
        "status": "failed",
        "spec": spec.to_dict(),
        "metrics": {},
        "params": {},
        "time": {},
        "memory": memory_report(None),
        "history": [],
        "error": {"type": type(exc).__name__, "message": str(exc)[:2000], "phase": phase,
                  "traceback": traceback.format_exc()[-4000:]},
        "environment": environment(spec.precision),
        "started_at": None,
        "finished_at": _now(),
    }


def run_and_record(spec: CellSpec, record_file: Path, data_dir: str | Path | None) -> None:
    """Run a cell and write its record, ok or failed; a failure is re-raised after recording."""
    timer = PhaseTimer()
    try:
        record = run_cell(spec, data_dir, timer)
    except Exception as exc:  # any failure becomes a failed record; the matrix goes on
        write_record(record_file, failed_record(spec, exc, timer.current))
        raise
    write_record(record_file, record)

