"""Training batches of prompt + completion ids, with the loss on the completion only.

Labels are masked by position: the prompt's positions and the padding get IGNORE, the
completion's keep their ids. Never by pad id: SmolLM2's pad token is its end-of-sequence
token, which closes every completion, and masking `input_ids == pad_token_id` would hide the
one token that teaches the model to stop.

Two layouts hold the same examples:

- padded (default): one row per example, padded on the right to the batch's longest (the
  length-grouped sampler of the classification path keeps that padding small);
- packed: the batch's examples side by side in one row, no padding at all. Position ids
  restart at 0 for every example and a block-diagonal causal mask (4-D, additive, in the
  model's dtype) keeps attention inside each example, so the loss and gradients are those
  of the padded batch (tests/generation/test_collate.py). Position ids alone would not do:
  sdpa and eager attention read the mask, not the boundaries. Prompt-learning methods
  (prompt tuning) prepend virtual tokens to a 2-D mask and cannot take a packed one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

IGNORE = -100  # what torch's cross entropy skips


class CompletionCollator:
    """Turns a list of example indices into a batch for a causal LM."""

    def __init__(self, prompt_ids: Sequence[np.ndarray], completion_ids: Sequence[np.ndarray],
                 pad_id: int, *, pack: bool = False,
                 mask_dtype: torch.dtype = torch.float32) -> None:
        self.prompts, self.completions = prompt_ids, completion_ids
        self.pad_id, self.pack, self.mask_dtype = pad_id, pack, mask_dtype

    def rows(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(input ids, labels) of each example, unpadded."""
        out = []
        for i in indices:
            prompt, completion = self.prompts[i], self.completions[i]
            ids = np.concatenate([prompt, completion]).astype(np.int64)
            labels = ids.copy()
            labels[:len(prompt)] = IGNORE
            out.append((ids, labels))
        return out

    def __call__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = self.rows(indices)
        return packed_batch(rows, self.mask_dtype) if self.pack else padded_batch(rows,
                                                                                  self.pad_id)


def padded_batch(rows: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int
                 ) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for n, (ids, row_labels) in enumerate(rows):
        input_ids[n, :len(ids)] = torch.from_numpy(ids)
        labels[n, :len(ids)] = torch.from_numpy(row_labels)
        attention[n, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def block_causal_mask(lengths: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, total, total) mask of where a token may attend: an earlier or the same position
    of its own example. Boolean (True: attend) for sdpa, which takes it whatever the query's
    dtype; otherwise additive (0, or the dtype's minimum), as eager attention adds it to the
    scores."""
    total = int(sum(lengths))
    example = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(lengths))
    same = example[:, None] == example[None, :]
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    if dtype == torch.bool:
        return (same & causal)[None, None]
    mask = torch.zeros(total, total, dtype=dtype)
    mask.masked_fill_(~(same & causal), torch.finfo(dtype).min)
    return mask[None, None]


def packed_batch(rows: Sequence[tuple[np.ndarray, np.ndarray]], mask_dtype: torch.dtype
                 ) -> dict[str, torch.Tensor]:
    lengths = [len(ids) for ids, _ in rows]
    return {
        "input_ids": torch.from_numpy(np.concatenate([ids for ids, _ in rows]))[None],
        "attention_mask": block_causal_mask(lengths, mask_dtype),
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "labels": torch.from_numpy(np.concatenate([labels for _, labels in rows]))[None],
    }


def is_packed(batch: dict[str, torch.Tensor]) -> bool:
    return batch["attention_mask"].dim() == 4


def batch_sequences(batch: dict[str, torch.Tensor]) -> int:
    """Examples in a batch of either layout."""
    if is_packed(batch):
        return int((batch["position_ids"] == 0).sum())
    return int(batch["input_ids"].shape[0])


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens in a batch of either layout."""
    if is_packed(batch):
        return int(batch["input_ids"].numel())
    return int(batch["attention_mask"].sum())


def loss_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry a loss: each predicts the next completion token."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
