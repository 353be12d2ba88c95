"""The causal-LM loss on the completion tokens, with the LM head only where a label is.

A causal LM's head maps every position's hidden state to the whole vocabulary; on SmolLM2
that is a 576 x 49,152 product per position, about a fifth of the forward FLOPs, and almost
all of it is thrown away: only the positions that predict a completion token carry a loss.
Here a forward pre-hook on the model's output embeddings (its LM head, whatever wraps it)
gathers the hidden states at those positions first, so the head computes (1, n, vocab)
logits for the n label positions instead of (batch, length, vocab). The loss is the mean
cross entropy over those positions, exactly what the full head's masked mean is, and so are
the gradients (tests/generation/test_loss.py).

The hook sits on the LM head module, under every wrapper (PEFT, Accelerate), so every
strategy trains through it. Prompt tuning's virtual tokens, prepended to the sequence, shift
every position by their count: the offset is read from the hidden states' length.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from peft_arena.generation.collate import IGNORE


def output_embeddings(model: nn.Module) -> nn.Module:
    """The LM head of a causal LM, under any PEFT or distributed wrapper."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    head = inner.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no output embeddings (LM head)")
    return head


@contextmanager
def head_at(model: nn.Module, rows: torch.Tensor, columns: torch.Tensor, length: int
            ) -> Iterator[None]:
    """The LM head computing (1, n, vocab) logits for the n positions (rows[i], columns[i])
    of a (batch, `length`) input only."""

    def gather(_module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        offset = hidden.shape[1] - length  # virtual tokens prepended by prompt tuning
        return (hidden[rows, columns + offset].unsqueeze(0), *args[1:])

    handle = output_embeddings(model).register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def completion_loss(model: nn.Module, batch: dict[str, torch.Tensor], *,
                    prune_head: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Mean cross entropy of each completion token given the tokens before it. `batch`: a
    collate batch (labels IGNORE outside the completions). `prune_head=False` computes the
    head at every position (the reference the pruned head must equal). `reduction="none"`:
    one loss per label position, in row-major order."""
    labels = batch["labels"]
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    targets = labels[:, 1:]
    rows, columns = (targets != IGNORE).nonzero(as_tuple=True)
    if prune_head:
        with head_at(model, rows, columns, labels.shape[1]):
            logits = model(**inputs).logits[0]
    else:
        logits = model(**inputs).logits
        logits = logits[:, logits.shape[1] - labels.shape[1]:][:, :-1][rows, columns]
    return nn.functional.cross_entropy(logits.float(), targets[rows, columns],
                                       reduction=reduction)
