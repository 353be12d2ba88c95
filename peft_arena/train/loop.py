"""The training and evaluation loops of a cell, driven through Accelerate.

Strategy hooks are the only place a method's needs enter the loop (`on_step_end`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from peft_arena.common import progress
from peft_arena.measure.metrics import classification_metrics, confidence_summary
from peft_arena.measure.timing import PhaseTimer
from peft_arena.model.loading import inference_attention
from peft_arena.train.early_stopping import EarlyStopping


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    macro_f1: float
    samples: int
    tokens: int
    # Per example, in loader order: for per-class scores and paired tests between cells.
    y_true: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    y_pred: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    confidence: dict[str, float] = field(default_factory=dict)  # metrics.confidence_summary


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
             description: str) -> EvalResult:
    model.eval()
    with inference_attention(accelerator.unwrap_model(model)):
        return _predict_batches(model, loader, accelerator, description)


def _predict_batches(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
                     description: str) -> EvalResult:
    losses, predictions, references, top_probs, tokens = [], [], [], [], 0
    # Several ranks: gather, less the examples Accelerate repeated to even out the last batch
    # (it counts them from the loader's batch size). One rank has nothing to gather or drop,
    # and its batches may differ in size (data.batching's token budget).
    gather = accelerator.gather_for_metrics if accelerator.num_processes > 1 else _same
    for batch in progress.track(loader, description):
        labels = batch.pop("labels")
        tokens += int(batch["attention_mask"].sum())
        logits = model(**batch).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        losses.append(gather(loss).cpu())
        predictions.append(gather(logits.argmax(-1)).cpu())
        references.append(gather(labels).cpu())
        top_probs.append(gather(logits.softmax(-1).amax(-1)).cpu())
    y_true, y_pred = torch.cat(references).numpy(), torch.cat(predictions).numpy()
    scores = classification_metrics(y_true, y_pred)
    confidence = confidence_summary(torch.cat(top_probs).numpy(), y_true == y_pred)
    return EvalResult(loss=float(torch.cat(losses).mean()), samples=len(y_true), tokens=tokens,
                      y_true=y_true, y_pred=y_pred, confidence=confidence, **scores)


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


EvalCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    samples: int = 0
    tokens: int = 0
    # The step of the validation pass whose weights were restored; None without early stopping.
    best_step: int | None = None
    stopped_early: bool = False

    @property
    def final(self) -> dict[str, Any] | None:
        """The validation pass that matches the weights the model holds after training."""
        if not self.history:
            return None
        if self.best_step is None:
            return self.history[-1]
        return next(e for e in self.history if e["step"] == self.best_step)


def _head_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(**batch).loss


def _rows(batch: dict[str, Any]) -> int:
    return int(batch["labels"].shape[0])


def _real_tokens(batch: dict[str, Any]) -> int:
    return int(batch["attention_mask"].sum())


def _validate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator
              ) -> EvalResult:
    return evaluate(model, loader, accelerator, "validate")


@dataclass(frozen=True)
class TaskHooks:
    """What a kind of task changes in the training loop: its loss, how it counts the
    examples and real tokens of a batch, and its validation pass. The defaults are the
    classification head's; a generative task brings its own (cell.generative)."""

    loss: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor] = _head_loss
    samples: Callable[[dict[str, Any]], int] = _rows
    tokens: Callable[[dict[str, Any]], int] = _real_tokens
    validate: Callable[[torch.nn.Module, DataLoader, Accelerator], EvalResult] = _validate


CLASSIFICATION_HOOKS = TaskHooks()


def optimizer_steps_per_epoch(batches: int, accumulation_steps: int) -> int:
    """An epoch's last group of batches steps the optimizer even when it is short."""
    return -(-batches // accumulation_steps)


def train_epochs(model, strategy, optimizer, scheduler, loader, val_loader, accelerator, spec,
                 total_steps: int, on_evaluate: EvalCallback | None = None,
                 timer: PhaseTimer | None = None,
                 hooks: TaskHooks = CLASSIFICATION_HOOKS) -> TrainResult:
    """Train for `total_steps`, validating every epoch or every `spec.eval_every` steps.

    `on_evaluate` gets each history entry as it is made (it may raise to abandon the run, as a
    hyper-parameter search does for a hopeless trial). With early stopping, the best pass's
    trainable weights are back in the model when this returns. Validation passes are timed
    as the `timer`'s "validate" phase, so the enclosing training phase holds training only.
    """
    result = TrainResult(history=[])
    eval_steps = None if spec.eval_every == "epoch" else int(spec.eval_every)
    stopper = (EarlyStopping(spec.early_stopping_metric, spec.early_stopping_patience)
               if spec.early_stopping_patience else None)
    step, running, batches = 0, 0.0, 0

    def validate(epoch: float) -> bool:
        """One validation pass into the history; True when early stopping says stop."""
        nonlocal running, batches
        with timer.phase("validate") if timer else nullcontext():
            val = hooks.validate(model, val_loader, accelerator)
        model.train()
        entry = {"epoch": epoch, "step": step, "train_loss": running / max(batches, 1),
                 "val_loss": val.loss, "val_accuracy": val.accuracy, "val_macro_f1": val.macro_f1}
        running, batches = 0.0, 0  # the next entry's train loss covers its own steps only
        result.history.append(entry)
        accelerator.log({k: v for k, v in entry.items() if k != "step"}, step=step)
        if on_evaluate is not None:
            on_evaluate(entry)
        return stopper is not None and stopper.update(model, entry)

    epochs = math.ceil(spec.epochs)
    per_epoch = optimizer_steps_per_epoch(len(loader), accelerator.gradient_accumulation_steps)
    for epoch in range(epochs):
        model.train()
        for batch in progress.track(loader, f"train epoch {epoch + 1}/{epochs}"):
            if step >= total_steps:  # fractional epochs stop mid-way
                break
            # Accelerate sums the gradients of `gradient_accumulation_steps` batches (and of
            # an epoch's shorter last group) before it lets the optimizer step.
            with accelerator.accumulate(model):
                loss = hooks.loss(model, batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"loss became {loss.item()} at step {step}; "
                                        f"lower the learning rate")
                accelerator.backward(loss)
                stepped = accelerator.sync_gradients
                if stepped:
                    if spec.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), spec.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    strategy.on_step_end(accelerator.unwrap_model(model), step)
                    optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            batches += 1
            result.samples += hooks.samples(batch)
            result.tokens += hooks.tokens(batch)
            if stepped and eval_steps and step % eval_steps == 0 \
                    and validate(round(step / per_epoch, 3)):
                result.stopped_early = True
                break
        if result.stopped_early:
            break
        if eval_steps is None and validate(epoch + 1):
            result.stopped_early = step < total_steps
            break
    never_validated = not result.history or result.history[-1]["step"] != step
    if eval_steps and not result.stopped_early and never_validated:
        validate(round(step / per_epoch, 3))  # the final weights get their own pass
    if stopper is not None and stopper.best is not None:
        stopper.restore(model)
        result.best_step = stopper.best["step"]
    return result
