"""The last encoder layer computed for the first token only.

A BERT or RoBERTa classifier reads one position of the last layer: the first token (BERT's
pooler and RoBERTa's head both take `[:, 0]`). Every other position of that layer is computed
and thrown away: its queries, attention rows, output projection and feed-forward block, about
five sixths of the layer's work, forward and backward. Here the last layer computes keys and
values for all positions (the first token attends to them) and the rest for position 0 only,
so the logits are the same up to float rounding, and so are the gradients (dropout draws fewer
random numbers, so a seeded run's masks differ, not their distribution). On MiniLM (6 layers)
that is about 14% of a training step's FLOPs.

The last layer then returns one position instead of all; the classification models allowed
below read nothing else. `FlopModel` counts the pruned calls per sequence, not per token.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from peft_arena.model.loading import transformers_model

# Classifiers that read only the first position of the last layer, with BERT's layer layout
# (`attention.self.query/key/value`, `attention.output`, `feed_forward_chunk`); tested on
# tiny BERT and RoBERTa models.
FIRST_TOKEN_CLASSIFIERS = frozenset({
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
})


def _first_token_forward(self: nn.Module, hidden_states: torch.Tensor,
                         attention_mask: torch.Tensor | None = None, *args, **kwargs
                         ) -> torch.Tensor:
    """BertLayer's forward with queries, attention output and feed-forward block for the
    first position only; returns a (batch, 1, hidden) tensor."""
    attention = self.attention.self
    batch = hidden_states.shape[0]
    first = hidden_states[:, :1]

    def heads(states: torch.Tensor) -> torch.Tensor:
        return states.view(batch, states.shape[1], -1, attention.attention_head_size
                           ).transpose(1, 2)

    query, key, value = (heads(attention.query(first)), heads(attention.key(hidden_states)),
                         heads(attention.value(hidden_states)))
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1, :]  # the first query's row
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation,
                                                   eager_attention_forward)
    kwargs.pop("cache", None)
    kwargs.pop("encoder_attention_mask", None)
    attended, _ = attend(attention, query, key, value, attention_mask,
                         dropout=attention.dropout.p if attention.training else 0.0,
                         scaling=attention.scaling, **kwargs)
    attended = attended.reshape(batch, 1, -1).contiguous()
    return self.feed_forward_chunk(self.attention.output(attended, first))


def changes_attention(model: nn.Module) -> bool:
    """Whether a PEFT method reaches into attention where a pruned last layer cannot follow:
    prefix tuning and Cartridge hand every layer trained keys and values through the cache,
    which the pruned forward does not read (its mask then covers more keys than it has);
    adaption prompt replaces the attention module with a wrapper of its own."""
    config = getattr(model, "peft_config", {}).get("default")
    return str(getattr(config, "peft_type", "")).rsplit(".", 1)[-1] in (
        "PREFIX_TUNING", "CARTRIDGE", "ADAPTION_PROMPT")


def compute_last_layer_for_first_token(model: nn.Module) -> bool:
    """Make `model`'s last encoder layer compute the first position only, where the model is
    one of `FIRST_TOKEN_CLASSIFIERS`; returns whether it did. Weights and their names are
    untouched (only the layer's forward method is replaced), so saving and export see the
    same model."""
    base = transformers_model(model)
    if type(base).__name__ not in FIRST_TOKEN_CLASSIFIERS or changes_attention(model):
        return False
    encoder = getattr(getattr(base, base.base_model_prefix, None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not layers or getattr(base.config, "is_decoder", False):
        return False
    last = layers[-1]
    last.forward = types.MethodType(_first_token_forward, last)
    last.first_token_only = True  # read by FlopModel: this layer's attention is one row
    return True
