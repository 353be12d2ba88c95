"""What a sequence-classification model is made of, read from the model itself.

transformers builds every `...ForSequenceClassification` model as a base model (the attribute
named by `base_model_prefix`: `bert`, `roberta`, `model`, `transformer`, ...) plus head
modules beside it (`classifier`; `pre_classifier` + `classifier` on DistilBERT; `score` on
decoders; `pooler` + `classifier` on DeBERTa). The head is therefore whatever sits outside the
base model, whatever it is called. Encoders may also keep a pooler inside the base model
(BERT's `bert.pooler`), which feeds the head.

These names decide what QLoRA keeps out of 4-bit (the head and the pooler: PEFT cannot train
a quantized head, and a 4-bit pooler would quantize the head's only input) and what trains in
full beside the adapters (the head).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from peft_arena.common.errors import UserError
from peft_arena.config.presets import resolve_model_path


@contextmanager
def loading_errors(model: str, what: str) -> Iterator[None]:
    """Loading failures as one-line UserErrors: a model that wants to run its own code, or one
    that cannot be found or read. Other errors stay as they are."""
    try:
        yield
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise UserError(
            f"Model {model!r} ships its own Python code, which peft-arena does not run by "
            f"default; pass --trust-remote-code if you trust its source."
        ) from None
    except OSError as exc:
        raise UserError(
            f"Could not load {what} {model!r} ({str(exc).splitlines()[0]}); "
            f"give a local model folder or a Hub id you can reach."
        ) from None


def load_config(model: str, *, trust_remote_code: bool = False, **overrides: Any
                ) -> PretrainedConfig:
    with loading_errors(model, "the config of model"):
        try:
            return AutoConfig.from_pretrained(resolve_model_path(model),
                                              trust_remote_code=trust_remote_code, **overrides)
        except ValueError as exc:  # not remote code: a config.json transformers cannot read
            if "trust_remote_code" in str(exc):
                raise
            raise OSError(str(exc)) from None


def check_classifiable(model: str, config: PretrainedConfig) -> None:
    """A one-line error for a model type transformers has no classification class for."""
    if type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        return
    if "AutoModelForSequenceClassification" in (getattr(config, "auto_map", None) or {}):
        return  # the model's own code provides one
    raise UserError(
        f"Model {model!r} (model type {config.model_type!r}) has no sequence-classification "
        f"class in transformers; choose a model that AutoModelForSequenceClassification "
        f"supports (BERT, RoBERTa, Llama, Qwen2, Mistral, Gemma, GPT-2, ...)."
    )


def skeleton(config: PretrainedConfig, *, trust_remote_code: bool = False) -> torch.nn.Module:
    """The classification model built from its config on the meta device: its modules and
    shapes, no memory and no weights."""
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(
            config, attn_implementation="eager", trust_remote_code=trust_remote_code)


def causal_lm_skeleton(config: PretrainedConfig, *, trust_remote_code: bool = False
                       ) -> torch.nn.Module:
    """The model with its language-model head (a generative task's), on the meta device."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", trust_remote_code=trust_remote_code)


def model_skeleton(model: str, num_labels: int = 2, *, trust_remote_code: bool = False
                   ) -> torch.nn.Module:
    config = load_config(model, trust_remote_code=trust_remote_code, num_labels=num_labels)
    check_classifiable(model, config)
    return skeleton(config, trust_remote_code=trust_remote_code)


def _has_parameters(module: torch.nn.Module | None) -> bool:
    return module is not None and next(module.parameters(), None) is not None


def head_module_names(model: torch.nn.Module) -> list[str]:
    """Top-level names of the modules outside the base model that hold parameters (dropout
    layers hold none): the classification head, in definition order."""
    prefix = getattr(model, "base_model_prefix", "")
    if not isinstance(getattr(model, prefix, None), torch.nn.Module):
        raise UserError(f"{type(model).__name__} has no base model attribute {prefix!r}; "
                        f"cannot tell its classification head apart.")
    return [name for name, child in model.named_children()
            if name != prefix and _has_parameters(child)]


def pooler_module_name(model: torch.nn.Module) -> str | None:
    """The full name of a pooler inside the base model (BERT's `bert.pooler`), if any."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None)
    pooler = getattr(base, "pooler", None) if base is not None else None
    return f"{prefix}.pooler" if isinstance(pooler, torch.nn.Module) \
        and _has_parameters(pooler) else None


def full_precision_module_names(model: torch.nn.Module) -> list[str]:
    """Modules a 4-bit load must leave in full precision: the head and the pooler.

    Full names, because transformers matches a skip name against a module's full name from
    its start or as its suffix: `pooler` alone matches neither `bert.pooler.dense` nor
    anything else, and BERT's pooler would be quantized.
    """
    pooler = pooler_module_name(model)
    return head_module_names(model) + ([pooler] if pooler else [])


def supports_gradient_checkpointing(config: PretrainedConfig) -> bool:
    model_class = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING.get(type(config), None)
    return bool(getattr(model_class, "supports_gradient_checkpointing", True))
