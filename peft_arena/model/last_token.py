"""The last decoder layer computed for the last real token only.

A decoder classifier (transformers' `...ForSequenceClassification` for Llama, Qwen2, Mistral)
reads one position of its last hidden states: each row's rightmost token that is not the pad
token. Every other position of the last layer, and of the final norm, is computed and thrown
away: its queries, attention rows, output projection and gated MLP, forward and backward.
Here the last layer computes the input norm, keys and values for all positions (the read
position attends to every real token up to it, causally) and the rest for the read position
only; the final norm then normalises that one row. The logits and the gradients are the same
as the unpruned model's up to float rounding (tests/model/test_last_token.py, with padding, under
full fine-tuning, LoRA and IA3). On SmolLM2-135M (30 layers) that is about 3% of a step's
FLOPs; `FlopModel` counts the pruned calls per sequence.

How: a forward pre-hook on the base model (`model.model`) finds the read positions from the
input ids exactly as the head will (the rightmost non-pad id; the last position without input
ids), the last layer's forward is replaced to compute those rows, and the final norm's to
normalise them and hand the head a (batch, length, hidden) view in which every position holds
its row's value, so the head's own indexing picks the same numbers. Weights and their names
are untouched, so saving and export see the same model.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from peft_arena.model.first_token import changes_attention
from peft_arena.model.loading import transformers_model

# Classifiers whose decoder layers have Llama's layout (`input_layernorm`, `self_attn` with
# q/k/v/o projections and rotary embeddings, `post_attention_layernorm`, `mlp`) and whose
# head reads the rightmost non-pad token; tested on tiny random models of each.
LAST_TOKEN_CLASSIFIERS = frozenset({
    "LlamaForSequenceClassification",
    "Qwen2ForSequenceClassification",
    "MistralForSequenceClassification",
})


@dataclass
class _ReadPositions:
    """Set by the base model's pre-hook on every call; read by the last layer and the norm."""

    rows: torch.Tensor | None = None  # (batch,) position the head reads in each row
    length: int = 0
    padding_mask: torch.Tensor | None = None  # (batch, length) 1 = real token, or None


def _read_positions_hook(state: _ReadPositions, pad_token_id: Any):
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = args[0] if args else kwargs.get("input_ids")
        mask = kwargs.get("attention_mask")
        if input_ids is not None:
            batch, length = input_ids.shape
            pad = pad_token_id()
            if pad is None:  # the head then reads the last position (batch 1 only)
                rows = torch.full((batch,), length - 1, device=input_ids.device)
            else:  # as GenericForSequenceClassification: the rightmost non-pad token
                indices = torch.arange(length, device=input_ids.device, dtype=torch.int32)
                rows = (indices * (input_ids != pad).to(torch.int32)).argmax(-1)
        else:
            embeds = kwargs["inputs_embeds"]
            batch, length = embeds.shape[:2]
            rows = torch.full((batch,), length - 1, device=embeds.device)
        state.rows, state.length = rows.long(), length
        state.padding_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    return hook


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotate_half) -> torch.Tensor:
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def _row_mask(state: _ReadPositions, attention_mask: torch.Tensor | None, attention: nn.Module,
              dtype: torch.dtype) -> torch.Tensor:
    """The read row of the layer's 4-D mask, or, where the model passed none (SDPA's causal
    fast path), that row built: keys up to the read position, real tokens only."""
    rows = state.rows
    batch = rows.shape[0]
    if attention_mask is not None and attention_mask.dim() == 4:
        full = attention_mask.expand(batch, -1, -1, -1)
        return full[torch.arange(batch, device=rows.device), :, rows, :].unsqueeze(2)
    keys = torch.arange(state.length, device=rows.device)
    allowed = keys[None, :] <= rows[:, None]
    window = getattr(attention, "sliding_window", None)
    if window:
        allowed &= keys[None, :] > rows[:, None] - window
    if state.padding_mask is not None:
        allowed &= state.padding_mask.bool()
    additive = torch.zeros(allowed.shape, dtype=dtype, device=rows.device)
    additive.masked_fill_(~allowed, torch.finfo(dtype).min)
    return additive[:, None, None, :]


def _last_token_layer_forward(self: nn.Module, hidden_states: torch.Tensor,
                              attention_mask: torch.Tensor | None = None,
                              position_ids: torch.Tensor | None = None, cache: Any = None,
                              use_cache: bool | None = False,
                              position_embeddings: tuple[torch.Tensor, torch.Tensor] | None
                              = None, **kwargs: Any) -> torch.Tensor:
    """A Llama-layout decoder layer's forward with queries, attention output, norm and MLP
    for the read position only; returns a (batch, 1, hidden) tensor."""
    state: _ReadPositions = self.read_positions
    attention = self.self_attn
    batch, length = hidden_states.shape[:2]
    pick = (torch.arange(batch, device=hidden_states.device), state.rows)
    residual = hidden_states[pick].unsqueeze(1)
    normed = self.input_layernorm(hidden_states)
    head_dim = attention.head_dim
    query = attention.q_proj(normed[pick].unsqueeze(1)).view(batch, 1, -1, head_dim
                                                              ).transpose(1, 2)
    key = attention.k_proj(normed).view(batch, length, -1, head_dim).transpose(1, 2)
    value = attention.v_proj(normed).view(batch, length, -1, head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    rotate_half = sys.modules[type(attention).__module__].rotate_half
    cos_row = cos.expand(batch, -1, -1)[pick].unsqueeze(1)
    sin_row = sin.expand(batch, -1, -1)[pick].unsqueeze(1)
    query = _rotate(query, cos_row, sin_row, rotate_half)
    key = _rotate(key, cos, sin, rotate_half)
    eager = sys.modules[type(attention).__module__].eager_attention_forward
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
    extra = {"sliding_window": attention.sliding_window} \
        if hasattr(attention, "sliding_window") else {}
    kwargs.pop("output_attentions", None)
    attended, _ = attend(attention, query, key, value,
                         _row_mask(state, attention_mask, attention, query.dtype),
                         dropout=attention.attention_dropout if attention.training else 0.0,
                         scaling=attention.scaling, **extra, **kwargs)
    hidden = residual + attention.o_proj(attended.reshape(batch, 1, -1).contiguous())
    return hidden + self.mlp(self.post_attention_layernorm(hidden))


def _spread_over_sequence(state: _ReadPositions):
    """A forward hook on the final norm: its output for the read rows, spread over the
    sequence as a view for the head. A hook, not a replaced forward: the `kernels` package
    resets the norm's forward whenever the model switches between training and evaluation."""
    def hook(_module: nn.Module, _args: tuple, normed: torch.Tensor) -> torch.Tensor:
        return normed.expand(-1, state.length, -1)
    return hook


def compute_last_layer_for_last_token(model: nn.Module) -> bool:
    """Make `model`'s last decoder layer and final norm compute the position its head reads
    only, where the model is one of `LAST_TOKEN_CLASSIFIERS`; returns whether it did."""
    top = transformers_model(model)
    if type(top).__name__ not in LAST_TOKEN_CLASSIFIERS or changes_attention(model):
        return False
    base = getattr(top, top.base_model_prefix, None)
    layers, norm = getattr(base, "layers", None), getattr(base, "norm", None)
    if not layers or norm is None or getattr(base, "_last_token_hook", None) is not None:
        return False
    state = _ReadPositions()
    config = top.config
    base._last_token_hook = base.register_forward_pre_hook(
        _read_positions_hook(state, lambda: config.get_text_config().pad_token_id),
        with_kwargs=True)
    last = layers[-1]
    last.read_positions = state
    last.forward = types.MethodType(_last_token_layer_forward, last)
    norm.register_forward_hook(_spread_over_sequence(state))
    last.first_token_only = True  # read by FlopModel: this layer's attention is one row
    return True
