"""The model ready to train: loaded, with the memory tools the spec asks for, wrapped by its
strategy, sped up, and prepared by Accelerate with its optimizer, schedule and loaders."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from peft_arena.common import progress
from peft_arena.config.spec import CellSpec
from peft_arena.measure.params import count_parameters
from peft_arena.measure.timing import PhaseTimer
from peft_arena.model.adapters import upcast_trainable
from peft_arena.model.loading import load_model
from peft_arena.model.speed_ups import apply_speed_ups
from peft_arena.strategies import Strategy
from peft_arena.train.inputs import Inputs, train_loader
from peft_arena.train.memory_tools import BatchPlan, base_dtype, enable_gradient_checkpointing
from peft_arena.train.optim import build_optimizer
from peft_arena.train.precision import Precision


@dataclass
class Built:
    """The model ready to train, with its optimizer and schedule (all prepared by Accelerate)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loaders: dict[str, DataLoader]
    trainable: int
    total: int


# (model, label names, on_gpu=, trust_remote_code=, dtype=, pad_token_id=, **load kwargs)
LoadModel = Callable[..., torch.nn.Module]


def model_to_train(spec: CellSpec, strategy: Strategy, inputs: Inputs, *, on_gpu: bool,
                   precision: Precision, trust_remote_code: bool,
                   load: LoadModel = load_model,
                   timer: PhaseTimer | None = None) -> torch.nn.Module:
    """The loaded model, with the memory tools the spec asks for, wrapped by its strategy:
    a frozen base in bf16 in bf16 runs, trainable weights in fp32. `load`: how the task's
    kind loads it (a classifier by default). A strategy's own pass before training (EVA's
    statistics, PiSSA's SVD) is timed as the `prepare` phase."""
    set_seed(spec.seed)  # before the head and the adapters draw their initial weights
    model = load(spec.model, inputs.label_names, on_gpu=on_gpu,
                       trust_remote_code=trust_remote_code,
                       dtype=base_dtype(strategy.peft_config_class is not None, precision.name),
                       pad_token_id=inputs.pad_id,
                       **strategy.load_kwargs(precision.compute_dtype))
    if spec.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model = strategy.wrap(model, inputs.total_steps)
    if strategy.prepares:
        with (timer.phase("prepare") if timer else nullcontext()), \
                progress.status("preparing the adapters"):
            model = strategy.prepare(model, inputs.loaders["train"])
    upcast_trainable(model)
    apply_speed_ups(model, on_gpu=on_gpu)
    return model


def build_for_training(spec: CellSpec, strategy: Strategy, accelerator: Accelerator,
                       inputs: Inputs, plan: BatchPlan, *, precision: Precision,
                       trust_remote_code: bool, load: LoadModel = load_model,
                       train_batches: Callable[[int], DataLoader] | None = None,
                       timer: PhaseTimer | None = None) -> Built:
    """`plan`: the batch split to train with. `load` and `train_batches` (the training
    loader at another batch size): the task kind's, classification's by default. A strategy
    may bring its own optimizer (LoRA+, LoRA-FA); the others get the shared one."""
    accelerator.gradient_accumulation_steps = plan.accumulation_steps
    loaders = dict(inputs.loaders)
    if plan.batch_size != spec.batch_size:
        loaders["train"] = (train_batches(plan.batch_size) if train_batches is not None
                            else train_loader(spec, inputs, plan.batch_size))
    model = model_to_train(spec, strategy, inputs, on_gpu=accelerator.device.type == "cuda",
                           precision=precision, trust_remote_code=trust_remote_code, load=load,
                           timer=timer)
    trainable, total = count_parameters(model)
    optimizer = (strategy.optimizer(model, spec.learning_rate, spec.weight_decay,
                                    spec.head_learning_rate)
                 or build_optimizer(model, spec.learning_rate, spec.weight_decay,
                                    spec.head_learning_rate))
    scheduler = get_scheduler(spec.lr_scheduler, optimizer,
                              num_warmup_steps=int(spec.warmup_ratio * inputs.total_steps),
                              num_training_steps=inputs.total_steps)
    model, optimizer, train, val, test, scheduler = accelerator.prepare(
        model, optimizer, loaders["train"], loaders["val"], loaders["test"], scheduler)
    return Built(model, optimizer, scheduler, {"train": train, "val": val, "test": test},
                 trainable, total)
