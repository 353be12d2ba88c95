"""Which models a generative task can train: causal LMs with a language-model head.

transformers maps some encoders to a causal-LM class too (BERT to `BertLMHeadModel`), but
an encoder checkpoint such as MiniLM holds no LM head: loading one would train a random
vocabulary projection on a bidirectional model, and nothing it generated would mean
anything. A model qualifies when its config names a causal-LM architecture
(`...ForCausalLM`, `...LMHeadModel`), or, for a config that names none, when its model type
is a causal LM and not an encoder.
"""

from __future__ import annotations

from typing import Any

from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from peft_arena.common.errors import UserError

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def is_generative(config: Any) -> bool:
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(name.endswith(CAUSAL_SUFFIXES) for name in architectures)
    return (getattr(config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and not getattr(config, "is_encoder_decoder", False)
            and getattr(config, "model_type", None) not in _ENCODERS)


# Encoders whose model type transformers also maps to a causal-LM class.
_ENCODERS = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie",
                       "data2vec-text", "rembert", "roc_bert", "xmod", "megatron-bert",
                       "bert-generation"})


def check_generative(model: str, config: Any, task: str) -> None:
    """A one-line error for a generative task on a model that cannot generate."""
    if is_generative(config):
        return
    what = ", ".join(getattr(config, "architectures", None) or []) or config.model_type
    raise UserError(f"Model {model!r} ({what}) has no language-model head, so it cannot "
                    f"train the generative task {task!r}; use a decoder (e.g. smollm2), or "
                    f"the task's classification form with this model.")
