"""Batched greedy decoding with the KV cache, timed.

Prompts are padded on the left (generation appends on the right, so every row's next token
must sit in the last column), batched longest first so that rows of a batch pad little, and
decoded greedily up to `max_new_tokens`: for label answers, the longest label's completion
(end-of-sequence token included), so no budget is spent past any possible answer. A fresh
`GenerationConfig` is passed, so the checkpoint's own sampling defaults (SmolLM2 ships a
temperature and top-p) never apply. Answers come back in the prompts' own order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig


@dataclass
class Decoded:
    token_ids: list[list[int]]  # generated ids per prompt, the end-of-sequence token cut
    texts: list[str]
    seconds: float
    new_tokens: int  # generated tokens, each row's end-of-sequence token included

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")

    def phase(self) -> dict[str, float]:
        """The record's decoding section."""
        return {"seconds": self.seconds, "new_tokens": self.new_tokens,
                "tokens_per_s": self.tokens_per_s, "examples": len(self.texts)}


def left_padded(prompts: Sequence[np.ndarray], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for n, ids in enumerate(prompts):
        if len(ids):
            input_ids[n, width - len(ids):] = torch.as_tensor(np.asarray(ids), dtype=torch.long)
            attention[n, width - len(ids):] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


@torch.inference_mode()
def greedy_decode(model: Any, tokenizer: Any, prompts: Sequence[np.ndarray], *,
                  max_new_tokens: int, batch_size: int = 16,
                  device: torch.device | str | None = None) -> Decoded:
    """Greedy answers to `prompts` (token ids). `model` is a causal LM or a PEFT wrapper of
    one; it is put in eval mode."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              use_cache=True, pad_token_id=pad, eos_token_id=eos)
    device = device or next(model.parameters()).device
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    new_tokens = 0
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        batch = {k: v.to(device) for k, v in left_padded([prompts[i] for i in rows],
                                                         pad).items()}
        out = model.generate(**batch, generation_config=config)
        generated = out[:, batch["input_ids"].shape[1]:].tolist()
        for i, ids in zip(rows, generated, strict=True):
            end = ids.index(eos) if eos in ids else len(ids)
            new_tokens += min(end + 1, len(ids))
            answers[i] = ids[:end]
    seconds = time.perf_counter() - start
    texts = tokenizer.batch_decode(answers, skip_special_tokens=True)
    return Decoded(answers, texts, seconds, new_tokens)
