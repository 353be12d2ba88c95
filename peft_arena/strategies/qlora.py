"""QLoRA's hooks: LoRA on a base model whose linear weights are stored in 4-bit NF4.

Its settings are the `qlora` entry of methods.yaml, which extends `lora`. On CPU this saves
memory, not time (weights are de-quantized on the fly).
"""

from __future__ import annotations

from typing import Any

import torch
from peft import get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig

from peft_arena.config.heads import HEAD_MODULE_NAMES
from peft_arena.strategies.base import Strategy

# The head must stay out of quantization or PEFT cannot make it trainable: the classification
# head's modules, plus BERT's and RoBERTa's pooler, which feeds it.
HEAD_MODULES = sorted(HEAD_MODULE_NAMES | {"pooler"})


class QLoRAHooks(Strategy):
    def load_kwargs(self, precision_dtype: torch.dtype) -> dict[str, Any]:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision_dtype,
            llm_int8_skip_modules=HEAD_MODULES,
        )
        return {"quantization_config": config}

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        # Casts the remaining full-precision weights to fp32 and freezes the base; must come
        # before the adapters are added.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        for module in model.modules():
            # bitsandbytes repacks 4-bit weights for its CPU inference kernel the first time a
            # module runs in eval mode and never unpacks them; training after the first
            # validation then fails. Keep the training layout throughout.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        return get_peft_model(model, self.peft_config(total_steps))

    def wrap_for_counting(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        # A 4-bit weight holds as many values as the unquantized one, so the counts are the
        # plain PEFT wrap's on the unquantized model; nothing is handed to bitsandbytes.
        return Strategy.wrap(self, model, total_steps)
