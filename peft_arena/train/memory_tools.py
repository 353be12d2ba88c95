"""What makes a big model fit: the dtype of a frozen base, gradient checkpointing, gradient
accumulation, and on CUDA a smaller batch after an out-of-memory error.

The batch a cell trains with is `batch_size` x `gradient_accumulation_steps` examples per
optimizer step (its effective batch). The fallback keeps that product: a batch of 32 that does
not fit becomes 16 x 2, then 8 x 4, so the optimizer takes the same steps on the same
examples and cells stay comparable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from accelerate.utils import find_executable_batch_size

from peft_arena.common.errors import UserError

T = TypeVar("T")


def base_dtype(freezes_base: bool, precision_name: str) -> torch.dtype:
    """The dtype weights load in. A frozen base in a bf16 run is stored in bf16: autocast
    would cast its fp32 weights to bf16 for every matmul anyway, and the fp32 copy doubles
    the memory. Weights that train (full fine-tuning) stay fp32, where AdamW's small updates
    are not rounded away."""
    return torch.bfloat16 if freezes_base and precision_name == "bf16" else torch.float32


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them.
    Non-reentrant checkpointing needs no inputs that require grad, so it works under a
    frozen base (PEFT) as well as for full fine-tuning."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(f"{type(model).__name__} does not support gradient checkpointing; "
                        f"leave gradient_checkpointing off for it.")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@dataclass(frozen=True)
class BatchPlan:
    batch_size: int  # examples per forward pass
    accumulation_steps: int  # forward passes per optimizer step

    @property
    def effective(self) -> int:
        return self.batch_size * self.accumulation_steps

    def smaller(self) -> BatchPlan | None:
        """The next plan down with the same effective batch: the largest batch size below this
        one that divides the effective batch (None at batch size 1)."""
        for size in range(self.batch_size - 1, 0, -1):
            if self.effective % size == 0:
                return BatchPlan(size, self.effective // size)
        return None


@dataclass
class FallbackLog:
    """What a run with the fallback tried: each plan that ran out of memory, then the one
    that ran."""

    out_of_memory: list[BatchPlan] = field(default_factory=list)
    used: BatchPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fallback_used": bool(self.out_of_memory),
                "out_of_memory_batch_sizes": [p.batch_size for p in self.out_of_memory]}


def run_with_batch_fallback(train: Callable[[BatchPlan], T], plan: BatchPlan, *,
                            enabled: bool, log: FallbackLog | None = None) -> T:
    """`train(plan)`; when `enabled` and it runs out of memory, again from the start with the
    next smaller plan of the same effective batch (Accelerate's `find_executable_batch_size`
    frees the memory between tries). `train` must rebuild everything it trains, since a
    failed try may have stepped the optimizer."""
    log = log if log is not None else FallbackLog()
    log.used = plan
    if not enabled:
        return train(plan)

    def next_batch_size() -> int:
        assert log.used is not None
        log.out_of_memory.append(log.used)
        log.used = log.used.smaller()
        return log.used.batch_size if log.used else 0  # 0: Accelerate gives up

    @functools.partial(find_executable_batch_size, starting_batch_size=plan.batch_size,
                       reduce_batch_size_fn=next_batch_size)
    def attempt(batch_size: int) -> T:
        assert log.used is not None and log.used.batch_size == batch_size
        return train(log.used)

    return attempt()
