"""QLoRA's hooks: LoRA on a base model whose linear weights are stored in 4-bit NF4.

Its settings are the `qlora` entry of methods.yaml, which extends `lora`. On CPU this saves
memory, not time (weights are de-quantized on the fly). The modules kept out of 4-bit (the
classification head and any pooler) are read from the model when it loads
(peft_arena.model.heads).
"""

from __future__ import annotations

from typing import Any

import torch

from peft_arena.model.four_bit import keep_training_layout, nf4_config
from peft_arena.strategies.base import Strategy


class QLoRAHooks(Strategy):
    def load_kwargs(self, precision_dtype: torch.dtype) -> dict[str, Any]:
        return {"quantization_config": nf4_config(precision_dtype)}

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        # Not PEFT's prepare_model_for_kbit_training: it casts every weight that is not 4-bit
        # (embeddings, norms, head) to fp32, doubling a bf16 run's frozen full-precision weights.
        # get_peft_model freezes the base; the trainable head is kept in fp32 by the cell.
        keep_training_layout(model)
        return super().wrap(model, total_steps)

    def wrap_for_counting(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        # A 4-bit weight holds as many values as the unquantized one, so the counts are the
        # plain PEFT wrap's on the unquantized model; nothing is handed to bitsandbytes.
        return Strategy.wrap(self, model, total_steps)
