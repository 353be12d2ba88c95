"""The training and evaluation loops of a cell, driven through Accelerate.

Strategy hooks are the only place a method's needs enter the loop (`on_step_end`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from peft_arena import progress
from peft_arena.metrics import classification_metrics

# PEFT reads a transformers attribute that is being renamed; the warning is not the user's.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    macro_f1: float
    samples: int
    tokens: int


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
             description: str) -> EvalResult:
    model.eval()
    losses, predictions, references, tokens = [], [], [], 0
    for batch in progress.track(loader, description):
        labels = batch.pop("labels")
        tokens += int(batch["attention_mask"].sum())
        logits = model(**batch).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        losses.append(accelerator.gather_for_metrics(loss).cpu())
        predictions.append(accelerator.gather_for_metrics(logits.argmax(-1)).cpu())
        references.append(accelerator.gather_for_metrics(labels).cpu())
    y_true, y_pred = torch.cat(references).numpy(), torch.cat(predictions).numpy()
    scores = classification_metrics(y_true, y_pred)
    return EvalResult(loss=float(torch.cat(losses).mean()), samples=len(y_true), tokens=tokens,
                      **scores)


def train_epochs(model, strategy, optimizer, scheduler, loader, val_loader, accelerator, spec,
           total_steps: int) -> tuple[list[dict[str, Any]], int, int]:
    history, step, samples, tokens = [], 0, 0, 0
    epochs = math.ceil(spec.epochs)
    for epoch in range(epochs):
        model.train()
        running, batches = 0.0, 0
        for batch in progress.track(loader, f"train epoch {epoch + 1}/{epochs}"):
            if step >= total_steps:  # fractional epochs stop mid-way
                break
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss became {loss.item()} at step {step}; "
                                    f"lower the learning rate")
            accelerator.backward(loss)
            if spec.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), spec.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            strategy.on_step_end(accelerator.unwrap_model(model), step)
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            batches += 1
            samples += batch["labels"].shape[0]
            tokens += int(batch["attention_mask"].sum())
        val = evaluate(model, val_loader, accelerator, "validate")
        history.append({"epoch": epoch + 1, "step": step, "train_loss": running / max(batches, 1),
                        "val_loss": val.loss, "val_accuracy": val.accuracy,
                        "val_macro_f1": val.macro_f1})
    return history, samples, tokens
