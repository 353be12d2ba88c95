"""What a training step keeps for its backward pass, per token and layer, from the config and
the strategy's wrapped model (on the meta device).

Autograd keeps a tensor only where a gradient needs it. A linear layer's input is kept for
its weight's gradient, so a frozen layer (the base under LoRA, QLoRA, IA3) keeps none of its
own; what a frozen layer's backward pass still needs is the nonlinear functions' inputs or
outputs and the attention's operands. So, per token of one decoder (or encoder) layer:

    always       2h                 the two norms' inputs
                 q + 2q             queries, and keys and values repeated to every query head
                                    (eager attention; grouped-query attention's `repeat_kv`
                                    copies them, so they are q wide, not kv wide)
                 a*s                the attention probabilities (eager); SDPA keeps instead
                                    q + 2kv + q (queries, keys, values, its output)
                 a*s (+ a*s bytes)  the dropped probabilities and their mask, where the
                                    attention has dropout (BERT)
                 3i | i             a gated MLP's gate, up and activation outputs (Llama,
                                    Qwen); else the activation's input (BERT, GPT-2)
                 2h bytes           the hidden dropout's masks, where it has dropout (BERT)
    by strategy  h | q | h | i      the input of each group of linears that share it (queries,
                                    keys and values; the output projection; gate and up; down),
                                    where one of them trains its weight or holds an adapter
                                    that reads it as it is
                 in (+ in bytes)    LoRA with dropout: each adapted layer's dropped copy of its
                                    input and the mask
                 r                  LoRA: each adapted layer's rank-wide product
                 h                  an RMS norm whose weight trains: its normalised input

(h hidden, q = heads x head_dim, kv = key-value heads x head_dim, i intermediate, a heads,
s the sequence length.) A decoder classifier that computes its last layer for the read token
only (model/last_token.py), or an encoder its first (model/first_token.py), keeps of that
layer only the input norm's input and the keys and values (h + 2q).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Linear layers by the input they read, by the last part of their name in the layer.
_GROUPS = {
    "qkv": ("q_proj", "k_proj", "v_proj", "qkv_proj", "query", "key", "value", "c_attn",
            "query_key_value", "Wqkv", "W_pack", "q_lin", "k_lin", "v_lin"),
    "o": ("o_proj", "out_proj", "attention.output.dense", "attn.c_proj", "self_attention.dense",
          "out_lin"),
    "up": ("gate_proj", "up_proj", "gate_up_proj", "w1", "w3", "intermediate.dense", "c_fc",
           "fc1", "dense_h_to_4h", "lin1"),
    "down": ("down_proj", "w2", "output.dense", "mlp.c_proj", "fc2", "dense_4h_to_h", "lin2"),
}


def linear_group(name: str) -> str | None:
    """The input group of a linear layer from its name within its layer (None: unknown)."""
    name = name.removesuffix(".base_layer")
    for group in ("o", "qkv", "up", "down"):  # "attention.output.dense" before "output.dense"
        if any(name == s or name.endswith(f".{s}") for s in _GROUPS[group]):
            return group
    return None


@dataclass(frozen=True)
class LayerProfile:
    """How a strategy trains one layer, as far as its kept activations go."""

    kept_inputs: frozenset[str] = frozenset()  # groups whose input is kept
    dropout_copies: int = 0  # LoRA with dropout: the input widths of the adapted layers
    ranks: int = 0  # LoRA: the sum of the adapted layers' ranks
    trained_rms_norms: int = 0


def _group_here_or_above(name: str) -> str | None:
    """The group of a linear layer, or of the one an adapter's parameters sit in
    (`k_proj.ia3_l`)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        group = linear_group(".".join(parts[:end]))
        if group is not None:
            return group
    return None


def _lora_dropout(module: Any) -> float:
    dropouts = getattr(module, "lora_dropout", None) or {}
    return max((float(getattr(d, "p", 0.0)) for d in dropouts.values()), default=0.0)


def _input_width(layer: torch.nn.Module) -> int:
    """A linear layer's input width: `in_features` of `nn.Linear`; GPT-2's `Conv1D` stores
    its weight as (in, out) and has no such attribute."""
    width = getattr(layer, "in_features", None)
    if width is None:
        weight = getattr(layer, "weight", None)
        width = int(weight.shape[0]) if weight is not None and weight.dim() == 2 else 0
    return int(width)


def profile_layer(layer: torch.nn.Module) -> LayerProfile:
    """What `layer` (one decoder or encoder layer of a wrapped model) keeps by strategy."""
    kept: set[str] = set()
    copies = ranks = norms = 0
    lora_layers: list[str] = []
    for name, module in layer.named_modules():
        if any(name.startswith(f"{parent}.") for parent in lora_layers):
            continue  # LoRA's own A and B, counted with their layer
        group = _group_here_or_above(name)
        lora_a = getattr(module, "lora_A", None)
        if lora_a is not None and len(lora_a) > 0 and group is not None:
            lora_layers.append(name)
            width = _input_width(module.base_layer)
            if _lora_dropout(module) > 0:
                copies += width
            else:
                kept.add(group)
            ranks += sum(int(r) for r in getattr(module, "r", {}).values())
            continue
        own = list(module.parameters(recurse=False))
        if not any(p.requires_grad for p in own):
            continue
        if "RMSNorm" in type(module).__name__:
            norms += 1
        elif group is not None:  # a trained weight, or an adapter's own vector (IA3)
            kept.add(group)
    return LayerProfile(frozenset(kept), copies, ranks, norms)


@dataclass(frozen=True)
class LayerShapes:
    hidden: int
    layers: int
    heads: int
    query_width: int  # heads x head_dim
    kv_width: int  # key-value heads x head_dim
    intermediate: int
    vocab: int
    attention_dropout: bool
    hidden_dropout: bool

    @classmethod
    def of(cls, config: Any) -> LayerShapes:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden, heads = text.hidden_size, text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        inner = (getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None)
                 or 4 * hidden)
        attention_p = (getattr(text, "attention_probs_dropout_prob", None)
                       or getattr(text, "attention_dropout", None) or 0.0)
        hidden_p = getattr(text, "hidden_dropout_prob", None) or 0.0
        return cls(hidden, text.num_hidden_layers, heads, heads * head_dim, kv_heads * head_dim,
                   inner, getattr(text, "vocab_size", 0) or 0, float(attention_p) > 0,
                   float(hidden_p) > 0)


def layer_bytes_per_token(shapes: LayerShapes, profile: LayerProfile, *, length: int,
                          element_bytes: int, gated_mlp: bool, eager_attention: bool) -> float:
    """Bytes one token keeps in one full layer (the module docstring's terms)."""
    h, q, kv, i = shapes.hidden, shapes.query_width, shapes.kv_width, shapes.intermediate
    elements = 2 * h + (3 * i if gated_mlp else i)
    if eager_attention:
        elements += 3 * q + shapes.heads * length
        extra_bytes = 0.0
        if shapes.attention_dropout:
            elements += shapes.heads * length
            extra_bytes += shapes.heads * length
    else:
        elements += 2 * q + 2 * kv
        extra_bytes = 0.0
    if shapes.hidden_dropout:
        extra_bytes += 2 * h
    widths = {"qkv": h, "o": q, "up": h, "down": i}
    elements += sum(widths[g] for g in profile.kept_inputs)
    elements += profile.dropout_copies + profile.ranks + profile.trained_rms_norms * h
    extra_bytes += profile.dropout_copies  # the dropout masks, a byte an element
    return elements * element_bytes + extra_bytes


def pruned_layer_bytes_per_token(shapes: LayerShapes, profile: LayerProfile,
                                 element_bytes: int) -> float:
    """A last layer computed for one position only: the input norm's input, keys and values
    for every position (and the queries' input where it is kept)."""
    elements = shapes.hidden + 2 * shapes.query_width
    if "qkv" in profile.kept_inputs:
        elements += shapes.hidden
    return elements * element_bytes
