"""Load tokenizers and classification models; count parameters honestly.

Tokenizers always come with a pad token and right padding (peft_arena.model.padding), models
with the matching `pad_token_id`, an explicit dtype (transformers 5 would otherwise take the
checkpoint's, bf16 for most decoders, even for weights that train), and, when quantized,
their head and pooler kept in full precision (peft_arena.model.heads).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from peft_arena.common.errors import UserError
from peft_arena.config.presets import resolve_model_path
from peft_arena.model.heads import (
    check_classifiable,
    full_precision_module_names,
    load_config,
    loading_errors,
    skeleton,
    supports_gradient_checkpointing,
)
from peft_arena.model.padding import match_pad_token, prepare_padding

# The "newly initialized: classifier" load report is expected for every classification run.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def load_tokenizer(model: str, *, trust_remote_code: bool = False):
    with loading_errors(model, "a tokenizer for model"):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model),
                                                  trust_remote_code=trust_remote_code)
    return prepare_padding(tokenizer, model)


def load_model(model: str, label_names: list[str], *, on_gpu: bool,
               attention: str | None = None, trust_remote_code: bool = False,
               dtype: torch.dtype = torch.float32, pad_token_id: int | None = None,
               **load_kwargs: Any) -> torch.nn.Module:
    """`trust_remote_code` lets a model run Python from its own folder or repository: only
    on the user's explicit request (`--trust-remote-code`).

    `dtype`: of every weight that is not quantized. `pad_token_id`: the tokenizer's (by
    default, that of the model's own tokenizer as `load_tokenizer` prepares it).
    """
    path = resolve_model_path(model)
    config = load_config(model, trust_remote_code=trust_remote_code)
    check_classifiable(model, config)
    quantization = load_kwargs.get("quantization_config")
    if quantization is not None and getattr(quantization, "llm_int8_skip_modules", ()) is None:
        quantization.llm_int8_skip_modules = full_precision_module_names(
            skeleton(config, trust_remote_code=trust_remote_code))
    # On CPU the eager attention kernels train ~2x faster than SDPA's (profiled on MiniLM,
    # bf16: SDPA's backward took 41% of a step); on GPU SDPA wins.
    attention = attention or ("sdpa" if on_gpu else "eager")
    with loading_errors(model, "model"):
        loaded = AutoModelForSequenceClassification.from_pretrained(
            path,
            dtype=dtype,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            attn_implementation=attention,
            trust_remote_code=trust_remote_code,
            # Safetensors holds tensors only; a pickled .bin beside it is never preferred.
            use_safetensors=True if _offers_safetensors(path) else None,
            **load_kwargs,
        )
    if pad_token_id is None:
        pad_token_id = load_tokenizer(model, trust_remote_code=trust_remote_code).pad_token_id
    match_pad_token(loaded.config, pad_token_id)
    return loaded


def load_causal_lm(model: str, *, on_gpu: bool, attention: str | None = None,
                   trust_remote_code: bool = False, dtype: torch.dtype = torch.float32,
                   pad_token_id: int | None = None, **load_kwargs: Any) -> torch.nn.Module:
    """The model with its language-model head, for a generative task; settings as
    `load_model`'s. A 4-bit load keeps the LM head in full precision: transformers leaves
    the output embeddings out of quantization when no skip list is given."""
    path = resolve_model_path(model)
    attention = attention or ("sdpa" if on_gpu else "eager")
    with loading_errors(model, "model"):
        loaded = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attention,
            trust_remote_code=trust_remote_code,
            use_safetensors=True if _offers_safetensors(path) else None, **load_kwargs)
    if pad_token_id is None:
        pad_token_id = load_tokenizer(model, trust_remote_code=trust_remote_code).pad_token_id
    match_pad_token(loaded.config, pad_token_id)
    # Generation reads the model's own defaults unless told otherwise; decoding passes its
    # own greedy config, and the pad id must match the tokenizer's.
    if getattr(loaded, "generation_config", None) is not None:
        loaded.generation_config.pad_token_id = pad_token_id
    return loaded


def check_model(model: str, *, gradient_checkpointing: bool = False,
                trust_remote_code: bool = False, classification: bool = True) -> None:
    """Fail at once, in one line, for a model no cell could train: no classification class
    (when a classification task needs one), a tokenizer that cannot pad, or gradient
    checkpointing it lacks."""
    config = load_config(model, trust_remote_code=trust_remote_code)
    if classification:
        check_classifiable(model, config)
    load_tokenizer(model, trust_remote_code=trust_remote_code)
    if gradient_checkpointing and not supports_gradient_checkpointing(config):
        raise UserError(
            f"Model {model!r} (model type {config.model_type!r}) does not support gradient "
            f"checkpointing; leave gradient_checkpointing off for it."
        )


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself): where the config
    and the attention implementation live."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def inference_attention(model: torch.nn.Module) -> Iterator[None]:
    """SDPA for evaluation passes on CPU: its forward kernels ran MiniLM inference 30% faster
    than eager attention at 128 tokens (equal at 16); only its backward is the slow part.

    `model`: unwrapped from any distributed wrapper (`accelerator.unwrap_model`)."""
    base = transformers_model(model)
    training_attention = getattr(getattr(base, "config", None), "_attn_implementation", None)
    switched = training_attention not in (None, "sdpa") and _set_attention(base, "sdpa")
    try:
        yield
    finally:
        if switched:
            base.set_attn_implementation(training_attention)


@contextmanager
def every_position(model: torch.nn.Module) -> Iterator[None]:
    """The last layer computing every position again inside the block.

    The first- and last-token pruning (model.first_token, model.last_token) computes the last
    layer only where the classification head reads it; every other position of the last
    hidden states then holds no real value. A reader of all positions (retention's language
    model head, which scores every next token) needs the layer whole."""
    pruned = [module for module in model.modules()
              if getattr(module, "first_token_only", False) and "forward" in vars(module)]
    replaced = [module.forward for module in pruned]
    for module in pruned:
        del module.forward  # the class's own forward again
        module.first_token_only = False
    try:
        yield
    finally:
        for module, forward in zip(pruned, replaced, strict=True):
            module.forward = forward
            module.first_token_only = True


def _set_attention(model: torch.nn.Module, attention: str) -> bool:
    try:
        model.set_attn_implementation(attention)
    except (AttributeError, ValueError, ImportError):  # no such path: the model keeps its own
        return False
    return True


def _offers_safetensors(path: str) -> bool:
    folder = Path(path)  # a local folder; a Hub id is not, and transformers prefers them anyway
    return folder.is_dir() and any(folder.glob("*.safetensors"))  # single file or shards


