"""The sections of a cell's record that the runner assembles from its steps: what was
resolved, the metrics, the times, the memory tools (with the dry run's estimate), and the
test predictions. Each is a function of the steps' results; none runs the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from peft_arena.cell.setup import Setup
from peft_arena.config.gguf_source import model_source
from peft_arena.config.presets import resolve_model_path
from peft_arena.config.spec import CellSpec
from peft_arena.measure.estimate_check import cpu_estimate_check
from peft_arena.measure.metrics import per_class_f1
from peft_arena.measure.timing import PhaseTimer
from peft_arena.model.compiling import CompileOutcome
from peft_arena.model.four_bit import is_four_bit, kernel_note
from peft_arena.records.schema import Metrics, Predictions, Resolved, Time
from peft_arena.train.build import Built
from peft_arena.train.inputs import SPLITS, Inputs
from peft_arena.train.loop import EvalResult, TrainResult
from peft_arena.train.memory_estimate import estimate_cell_memory
from peft_arena.train.memory_tools import FallbackLog


def memory_tools(spec: CellSpec, setup: Setup, inputs: Inputs, built: Built,
                 fallback: FallbackLog, *, trust_remote_code: bool) -> dict[str, Any]:
    """How the cell's batch was split, what the frozen base was stored in, and the dry run's
    memory estimate beside the measured figures."""
    used = fallback.used
    assert used is not None
    model = setup.accelerator.unwrap_model(built.model)
    frozen = sorted({"nf4" if is_four_bit(p) else
                     str(p.dtype).removeprefix("torch.")
                     for p in model.parameters() if not p.requires_grad})
    # The estimate of the batches this cell trained on: its longest sequence and, for a
    # generative task, its longest completion (the positions that carry the loss).
    train = inputs.splits["train"]
    completions = getattr(train, "completion_ids", None)
    longest_completion = (max((len(ids) for ids in completions), default=0)
                          if completions is not None else 0)
    # A free-text generative task has no labels; the estimate wants a head's width.
    estimate = estimate_cell_memory(
        spec, max(1, len(inputs.label_names)), on_gpu=setup.on_gpu,
        batch_size=used.batch_size, trust_remote_code=trust_remote_code,
        generative=completions is not None,
        length=int(max(train.lengths)) if len(train.lengths) else None,
        completion_tokens=longest_completion or None)
    return {"batch_size": used.batch_size,
            "gradient_accumulation_steps": used.accumulation_steps,
            "effective_batch_size": used.effective * setup.accelerator.num_processes,
            **fallback.to_dict(),
            "gradient_checkpointing": spec.gradient_checkpointing,
            "frozen_dtypes": frozen,
            "estimate": estimate.to_dict()}


def with_estimate_check(tools: dict[str, Any], memory: dict[str, Any],
                        rank_peaks: list[int | None],
                        rss_baseline: dict[str, int | None]) -> dict[str, Any]:
    """The memory tools with the estimate checked against the measured peak: CPU cells of one
    process only (on GPU the torch peaks say more)."""
    in_use = ((memory.get("timeline") or {}).get("stats") or {}).get("in_use_bytes") or {}
    check = (cpu_estimate_check(tools["estimate"]["total_bytes"], memory["peak_bytes"],
                                rss_baseline.get("baseline_rss_bytes"),
                                max_in_use_bytes=in_use.get("max"),
                                baseline_in_use_bytes=rss_baseline.get("baseline_in_use_bytes"))
             if memory.get("source") == "cpu_rss" and len(rank_peaks) <= 1 else None)
    return {**tools, "estimate_check": check}


def resolved(spec: CellSpec, setup: Setup, inputs: Inputs, built: Built, *,
             trust_remote_code: bool, compiled: CompileOutcome | None = None) -> Resolved:
    model = setup.accelerator.unwrap_model(built.model)
    splits = inputs.splits
    return {
        "model_path": str(getattr(built.model, "name_or_path", "")) or spec.model,
        "trust_remote_code": trust_remote_code,
        "peft_config": peft_config(model),
        "precision": setup.precision.name,
        "attn_implementation": getattr(getattr(model, "config", None),
                                       "_attn_implementation", None),
        "train_examples": len(splits["train"]), "val_examples": len(splits["val"]),
        "test_examples": len(splits["test"]),
        "label_names": inputs.label_names,
        "total_steps": inputs.total_steps,
        "tokenize_cache_hits": inputs.cache_hits,
        "data_fingerprint": {name: splits[name].fingerprint() for name in SPLITS},
        **({"four_bit_kernel": note} if (note := kernel_note(
            model, setup.accelerator.device.type)) else {}),
        "model_source": model_source(resolve_model_path(spec.model)),
        # model.compiling: whether training ran compiled, how, and what compiling cost
        "compile": compiled.to_dict() if compiled is not None else None,
    }


def metrics(inputs: Inputs, trained: TrainResult, tested: EvalResult) -> Metrics:
    return {"accuracy": tested.accuracy, "macro_f1": tested.macro_f1,
            "eval_loss": tested.loss,
            # The pass whose weights were tested: the best one under early stopping.
            **val_metrics(trained),
            "per_class_f1": per_class_f1(tested.y_true, tested.y_pred, inputs.label_names),
            "confidence": tested.confidence}


def times(timer: PhaseTimer, trained: TrainResult, tested: EvalResult) -> Time:
    phases = timer.phases
    return {"total_s": timer.total(), "phases": phases,
            "train_samples_per_s": trained.samples / phases["train_s"],
            "train_tokens_per_s": trained.tokens / phases["train_s"],
            "eval_samples_per_s": tested.samples / phases["eval_s"],
            "eval_tokens_per_s": tested.tokens / phases["eval_s"]}


def val_metrics(trained: TrainResult) -> Metrics:
    final = trained.final or {}
    return {"val_accuracy": final.get("val_accuracy"), "val_macro_f1": final.get("val_macro_f1")}


def peft_config(model: torch.nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        return None
    data = config.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()
            if k != "rank_pattern"}


def predictions_in_order(result: EvalResult, batches: list[list[int]]) -> Predictions:
    """Test labels and predictions in the split's own order (evaluation runs sorted by
    length)."""
    order = np.concatenate(batches)
    restored = {}
    for name, values in (("y_true", result.y_true), ("y_pred", result.y_pred)):
        in_order = np.empty_like(values)
        in_order[order] = values
        restored[name] = in_order.tolist()
    return {"y_true": restored["y_true"], "y_pred": restored["y_pred"]}
