"""Load tokenizers and classification models; count parameters honestly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from peft_arena.config.presets import resolve_model_path
from peft_arena.errors import UserError

# The "newly initialized: classifier" load report is expected for every classification run.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def load_tokenizer(model: str, *, trust_remote_code: bool = False):
    with _loading(model, "a tokenizer for model"):
        return AutoTokenizer.from_pretrained(resolve_model_path(model),
                                             trust_remote_code=trust_remote_code)


def load_model(model: str, label_names: list[str], *, on_gpu: bool,
               attention: str | None = None, trust_remote_code: bool = False,
               **load_kwargs: Any) -> torch.nn.Module:
    """`trust_remote_code` lets a model run Python from its own folder or repository: only
    on the user's explicit request (`--trust-remote-code`)."""
    path = resolve_model_path(model)
    # On CPU the eager attention kernels train ~2x faster than SDPA's (profiled on MiniLM,
    # bf16: SDPA's backward took 41% of a step); on GPU SDPA wins.
    attention = attention or ("sdpa" if on_gpu else "eager")
    with _loading(model, "model"):
        return AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            attn_implementation=attention,
            trust_remote_code=trust_remote_code,
            # Safetensors holds tensors only; a pickled .bin beside it is never preferred.
            use_safetensors=True if _offers_safetensors(path) else None,
            **load_kwargs,
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


def _set_attention(model: torch.nn.Module, attention: str) -> bool:
    try:
        model.set_attn_implementation(attention)
    except (AttributeError, ValueError, ImportError):  # no such path: the model keeps its own
        return False
    return True


def _offers_safetensors(path: str) -> bool:
    folder = Path(path)  # a local folder; a Hub id is not, and transformers prefers them anyway
    return folder.is_dir() and any(folder.glob("*.safetensors"))  # single file or shards


@contextmanager
def _loading(model: str, what: str) -> Iterator[None]:
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
