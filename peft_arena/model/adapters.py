"""Fit a strategy's PEFT config to the model it wraps.

- Unset target modules become PEFT's own defaults for the model type (LoRA q_proj and v_proj
  on Llama, query and value on BERT; IA3 k_proj, v_proj and down_proj on Llama, with down_proj
  as its feed-forward module). Methods of the LoRA family that PEFT keeps no table for on a
  model type (AdaLoRA on Mistral) take LoRA's. A model type with no defaults at all is a
  one-line error that says to set them.
- The classification head, whatever the architecture calls it, trains in full beside the
  adapters (`modules_to_save`), so that it is trained and saved with them.
- A causal LM (a generative task) gets PEFT's CAUSAL_LM task type and no head beside the
  adapters: its LM head sits outside the base model too, but is the pretrained one (tied to
  the embedding on SmolLM2) and stays frozen.
"""

from __future__ import annotations

import copy

import torch
from peft import PeftConfig
from peft.utils import constants

from peft_arena.common.errors import UserError
from peft_arena.model.heads import head_module_names

# PEFT adds these to modules_to_save of every sequence-classification model itself.
_PEFT_HEAD_NAMES = ("classifier", "score")
_LORA_FAMILY = ("LORA", "ADALORA", "LOHA", "LOKR")
CAUSAL_LM_CLASS_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def is_causal_lm(model: torch.nn.Module) -> bool:
    return type(model).__name__.endswith(CAUSAL_LM_CLASS_SUFFIXES)


def _defaults_table(peft_type: str, kind: str = "TARGET") -> dict[str, list[str]]:
    return getattr(constants, f"TRANSFORMERS_MODELS_TO_{peft_type}_{kind}_MODULES_MAPPING", {})


def default_target_modules(peft_type: str, model_type: str) -> list[str] | None:
    """PEFT's default targets of a method on a model type; None where it has none."""
    targets = _defaults_table(peft_type).get(model_type)
    if targets is None and peft_type in _LORA_FAMILY:
        targets = _defaults_table("LORA").get(model_type)
    return list(targets) if targets is not None else None


def fit_to_model(config: PeftConfig, model: torch.nn.Module, strategy: str) -> PeftConfig:
    """A copy of `config` with target modules and the head filled in from `model`."""
    config = copy.deepcopy(config)
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if hasattr(config, "target_modules") and config.target_modules is None:
        targets = default_target_modules(peft_type, model_type)
        if targets is None:
            raise UserError(
                f"PEFT has no default target modules for {strategy} on model type "
                f"{model_type!r}; set them, e.g. --set {strategy}.target_modules=all-linear."
            )
        config.target_modules = targets
        if hasattr(config, "feedforward_modules") and config.feedforward_modules is None:
            config.feedforward_modules = [
                t for t in _defaults_table(peft_type, "FEEDFORWARD").get(model_type, [])
                if t in targets]
    if is_causal_lm(model):
        config.task_type = "CAUSAL_LM"
        return config
    if hasattr(config, "modules_to_save"):
        kept = list(config.modules_to_save or [])
        extra = [n for n in head_module_names(model) if n not in (*_PEFT_HEAD_NAMES, *kept)]
        if extra:
            config.modules_to_save = kept + extra
    return config


def upcast_trainable(model: torch.nn.Module) -> None:
    """Keep trainable weights in fp32 over a bf16 base: AdamW updates far smaller than a
    bf16 weight's resolution would be lost. PEFT does this for adapter weights; the head's
    trainable copy keeps the base's dtype otherwise."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
