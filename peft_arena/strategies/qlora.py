"""QLoRA's hooks: LoRA on a base model whose linear weights are stored in 4-bit NF4.

Its settings are the `qlora` entry of methods.yaml, which extends `lora`. On CPU this saves
memory, not time (weights are de-quantized on the fly). The modules kept out of 4-bit (the
classification head and any pooler) are read from the model when it loads
(peft_arena.model.heads).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BitsAndBytesConfig

from peft_arena.strategies.base import Strategy


class QLoRAHooks(Strategy):
    def load_kwargs(self, precision_dtype: torch.dtype) -> dict[str, Any]:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision_dtype,
        )
        return {"quantization_config": config}

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        # Not PEFT's prepare_model_for_kbit_training: it casts every weight that is not 4-bit
        # (embeddings, norms, head) to fp32, doubling a bf16 run's frozen full-precision weights.
        # get_peft_model freezes the base; the trainable head is kept in fp32 by the cell.
        for module in model.modules():
            # bitsandbytes repacks 4-bit weights for its CPU inference kernel the first time a
            # module runs in eval mode and never unpacks them; training after the first
            # validation then fails. Keep the training layout throughout.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        return super().wrap(model, total_steps)

    def wrap_for_counting(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        # A 4-bit weight holds as many values as the unquantized one, so the counts are the
        # plain PEFT wrap's on the unquantized model; nothing is handed to bitsandbytes.
        return Strategy.wrap(self, model, total_steps)
