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

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from peft_arena import progress
from peft_arena.cell import distributed, trackers
from peft_arena.cell.batching import (
    Collator,
    IndexDataset,
    LengthGroupedBatchSampler,
    TokenizedSplit,
    sorted_batches,
    tokenize,
)
from peft_arena.cell.data import load_task_data, resolve_data_dir
from peft_arena.cell.dropout import use_fast_dropout
from peft_arena.cell.loop import EvalCallback, EvalResult, TrainResult, evaluate, train_epochs
from peft_arena.cell.modeling import count_parameters, load_model, load_tokenizer
from peft_arena.cell.optim import build_optimizer
from peft_arena.cell.precision import resolve_precision
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.measure.flops import compute_report, trained_sum_squared_lengths
from peft_arena.measure.memory import (
    GpuMemoryPoller,
    memory_report,
    saved_size_bytes,
    weights_bytes,
)
from peft_arena.measure.metrics import per_class_f1
from peft_arena.measure.provenance import environment
from peft_arena.measure.timing import PhaseTimer
from peft_arena.records.store import SCHEMA_VERSION, write_record
from peft_arena.strategies import load_strategies
from peft_arena.tools.export import save_trained_model, saved_model_dir


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _loader(split: TokenizedSplit, pad_id: int, batch_sampler: Any) -> DataLoader:
    return DataLoader(IndexDataset(len(split)), batch_sampler=batch_sampler,
                      collate_fn=Collator(split, pad_id))


def run_cell(spec: CellSpec, data_dir: str | Path | None = None,
             timer: PhaseTimer | None = None, *, results_dir: Path | None = None,
             on_evaluate: EvalCallback | None = None,
             evaluate_test: bool = True, trust_remote_code: bool = False) -> dict[str, Any]:
    """Run one cell and return its record (status "ok"); exceptions propagate to the caller,
    and `timer.current` then names the phase that failed. `trust_remote_code` lets the model
    run its own Python code (the user's explicit `--trust-remote-code` only).

    `results_dir` is where `spec.save_model` and a TensorBoard tracker write. `on_evaluate`
    sees every validation pass. Without `evaluate_test` (a hyper-parameter search, which must
    never look at the test split) the cell stops after training and returns a partial record
    with its history, validation metrics, parameter counts and timings.
    """
    timer = timer or PhaseTimer()
    started = _now()
    with timer.phase("setup"):
        precision = resolve_precision(spec.precision)
        # Created before anything allocates on the GPU, so that its baseline shows other
        # processes only.
        poller = GpuMemoryPoller.for_torch_device(0) if torch.cuda.is_available() else None
        # Accelerate keeps one state per process and refuses a second precision in it; a
        # process running several cells (the Python API, `tune`) starts each one afresh.
        AcceleratorState._reset_state()
        accelerator = Accelerator(mixed_precision=precision.accelerate_name,
                                  cpu=not torch.cuda.is_available(),
                                  dataloader_config=distributed.dataloader_config(),
                                  **trackers.accelerator_kwargs(spec, results_dir))
        trackers.start(accelerator, spec)
        on_gpu = accelerator.device.type == "cuda"
        strategy = load_strategies().get(spec.strategy)(spec)
    with poller or nullcontext():
        with timer.phase("data"), progress.status(f"loading {spec.task} data"):
            task = resolve_task(spec.task_file or spec.task)
            data = load_task_data(task, resolve_data_dir(data_dir), val_fraction=spec.val_fraction,
                                  max_train_samples=spec.max_train_samples,
                                  max_eval_samples=spec.max_eval_samples, seed=spec.data_seed)
        with timer.phase("tokenize"), progress.status("tokenizing"):
            tokenizer = load_tokenizer(spec.model, trust_remote_code=trust_remote_code)
            splits = {name: tokenize(split.texts, split.labels, tokenizer, spec.max_length)
                      for name, split in (("train", data.train), ("val", data.val),
                                          ("test", data.test))}
            train, val, test = (splits[n][0] for n in ("train", "val", "test"))
            pad_id = tokenizer.pad_token_id or 0
            train_loader = _loader(train, pad_id, LengthGroupedBatchSampler(
                train.lengths, spec.batch_size, spec.seed))
            val_loader = _loader(val, pad_id, distributed.SizedBatches(
                sorted_batches(val.lengths, spec.eval_batch_size), spec.eval_batch_size))
            test_batches = sorted_batches(test.lengths, spec.eval_batch_size)
            test_loader = _loader(test, pad_id, distributed.SizedBatches(
                test_batches, spec.eval_batch_size))
            total_steps = max(1, math.ceil(len(train_loader) * spec.epochs))

        with timer.phase("model"):
            set_seed(spec.seed)  # before the head and the adapters draw their initial weights
            model = load_model(spec.model, data.label_names, on_gpu=on_gpu,
                               trust_remote_code=trust_remote_code,
                               **strategy.load_kwargs(precision.compute_dtype))
            model = strategy.wrap(model, total_steps)
            if not on_gpu:
                use_fast_dropout(model)
            trainable, total = count_parameters(model)
            optimizer = build_optimizer(model, spec.learning_rate, spec.weight_decay,
                                        spec.head_learning_rate)
            scheduler = get_scheduler(spec.lr_scheduler, optimizer,
                                      num_warmup_steps=int(spec.warmup_ratio * total_steps),
                                      num_training_steps=total_steps)
            model, optimizer, train_loader, val_loader, test_loader, scheduler = (
                accelerator.prepare(model, optimizer, train_loader, val_loader, test_loader,
                                    scheduler))

        with timer.phase("train"):
            trained = train_epochs(model, strategy, optimizer, scheduler, train_loader,
                                   val_loader, accelerator, spec, total_steps, on_evaluate,
                                   timer=timer)
            history = trained.history
            # The whole cell's work, over every rank of a multi-device cell.
            train_samples, train_tokens = distributed.sum_over_ranks(
                accelerator, trained.samples, trained.tokens)
        if not evaluate_test:
            return _training_summary(spec, trained, trainable, total, timer)
        model_dir = None
        if spec.save_model and results_dir is not None:
            with timer.phase("save"):
                model_dir = saved_model_dir(results_dir, spec.cell_id)
                save_trained_model(accelerator.unwrap_model(model), tokenizer, spec,
                                   data.label_names, model_dir)
        with timer.phase("eval"):
            result = evaluate(model, test_loader, accelerator, "test")
            [eval_tokens] = distributed.sum_over_ranks(accelerator, result.tokens)
        with timer.phase("measure"):
            final_model = accelerator.unwrap_model(model)
            adapter_bytes = saved_size_bytes(final_model)
            model_weights_bytes = weights_bytes(final_model)
            compute = distributed.scale_peak(compute_report(
                final_model, train_tokens=train_tokens,
                sum_squared_lengths=trained_sum_squared_lengths(train.lengths, train_samples),
                train_seconds=timer.phases["train_s"], device=accelerator.device,
                dtype=precision.compute_dtype), accelerator.num_processes)
    memory = memory_report(poller, model_weights_bytes)  # last: peak RSS is a lifetime figure
    rank_peaks = distributed.per_rank(accelerator, memory["peak_bytes"])
    if len(rank_peaks) > 1 and any(p is not None for p in rank_peaks):
        memory["peak_bytes"] = max(p for p in rank_peaks if p is not None)
    provenance = environment(precision.name)
    phases = timer.phases
    record = {
        "schema_version": SCHEMA_VERSION,
        "cell_id": spec.cell_id,
        "status": "ok",
        "spec": spec.to_dict(),
        "resolved": {
            "model_path": str(getattr(model, "name_or_path", "")) or spec.model,
            "trust_remote_code": trust_remote_code,
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
                    # The pass whose weights were tested: the best one under early stopping.
                    **_val_metrics(trained),
                    "per_class_f1": per_class_f1(result.y_true, result.y_pred, data.label_names),
                    "confidence": result.confidence},
        "params": {"trainable": trainable, "total": total,
                   "trainable_pct": 100.0 * trainable / total,
                   # What save_pretrained writes: the adapter (and head), or the whole model.
                   "adapter_bytes": adapter_bytes},
        "time": {
            "total_s": timer.total(),
            "phases": phases,
            "train_samples_per_s": train_samples / phases["train_s"],
            "train_tokens_per_s": train_tokens / phases["train_s"],
            "eval_samples_per_s": result.samples / phases["eval_s"],
            "eval_tokens_per_s": eval_tokens / phases["eval_s"],
        },
        "memory": {**memory, "batch_size": spec.batch_size, "max_length": spec.max_length},
        "compute": compute,
        "history": history,
        "best_step": trained.best_step,
        "stopped_early": trained.stopped_early,
        "artifacts": {"model_dir": str(model_dir.relative_to(results_dir)) if model_dir else None},
        "predictions": _test_predictions(result, test_batches),
        "error": None,
        "environment": provenance,
        "execution": distributed.execution_section(accelerator, rank_peaks,
                                                   provenance["hardware"], precision.name),
        "started_at": started,
        "finished_at": _now(),
    }
    accelerator.log({"test_accuracy": result.accuracy, "test_macro_f1": result.macro_f1,
                     "test_loss": result.loss}, step=history[-1]["step"] if history else 0)
    accelerator.end_training()
    return record


def _val_metrics(trained: TrainResult) -> dict[str, float | None]:
    final = trained.final or {}
    return {"val_accuracy": final.get("val_accuracy"), "val_macro_f1": final.get("val_macro_f1")}


def _training_summary(spec: CellSpec, trained: TrainResult, trainable: int, total: int,
                      timer: PhaseTimer) -> dict[str, Any]:
    """The part of a record that training alone produces (no test split was touched)."""
    return {"cell_id": spec.cell_id, "spec": spec.to_dict(), "metrics": _val_metrics(trained),
            "params": {"trainable": trainable, "total": total},
            "time": {"total_s": timer.total(), "phases": timer.phases},
            "history": trained.history, "best_step": trained.best_step,
            "stopped_early": trained.stopped_early}


def _peft_config(model: torch.nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        return None
    data = config.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()
            if k != "rank_pattern"}


def _test_predictions(result: EvalResult, batches: list[list[int]]) -> dict[str, list[int]]:
    """Test labels and predictions in the split's own order (evaluation runs sorted by
    length), so two cells that share a test split can be compared example by example."""
    order = np.concatenate(batches)
    restored = {}
    for name, values in (("y_true", result.y_true), ("y_pred", result.y_pred)):
        in_order = np.empty_like(values)
        in_order[order] = values
        restored[name] = in_order.tolist()
    return restored


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
        "compute": {},
        "history": [],
        "predictions": None,
        "error": {"type": type(exc).__name__, "message": str(exc)[:2000], "phase": phase,
                  "traceback": traceback.format_exc()[-4000:]},
        "environment": environment(spec.precision),
        "started_at": None,
        "finished_at": _now(),
    }


def run_and_record(spec: CellSpec, record_file: Path, data_dir: str | Path | None, *,
                   timer: PhaseTimer | None = None, run_id: str | None = None,
                   trust_remote_code: bool = False, results_dir: Path | None = None) -> None:
    """Run a cell and write its record, ok or failed; a failure is re-raised after recording.

    `run_id` names the matrix run in the record, so that two runs sharing a results folder
    can be told apart. `results_dir` is where saved models and tracker logs go (default: the
    folder above the record's). Of a cell over several processes, rank 0 writes the record.
    """
    timer = timer or PhaseTimer()
    write = write_record if distributed.is_main_process() else (lambda *_: None)
    try:
        record = run_cell(spec, data_dir, timer,
                          results_dir=results_dir or Path(record_file).parent.parent,
                          trust_remote_code=trust_remote_code)
    except Exception as exc:  # any failure becomes a failed record; the matrix goes on
        write(record_file, {**failed_record(spec, exc, timer.current), "run_id": run_id})
        raise
    write(record_file, {**record, "run_id": run_id})

