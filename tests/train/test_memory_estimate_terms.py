"""The memory estimate's terms against hand arithmetic on a tiny Llama config: what each
strategy keeps per layer, grouped-query attention's repeated keys and values, LoRA's dropout
copies, the logits at the loss positions, and QLoRA's load peak."""

from __future__ import annotations

import json

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from peft_arena.config.spec import CellSpec
from peft_arena.model.four_bit import nf4_bytes_per_value
from peft_arena.train.activations import (
    LayerProfile,
    LayerShapes,
    layer_bytes_per_token,
    linear_group,
    profile_layer,
)
from peft_arena.train.memory_estimate import activation_bytes, estimate_cell_memory, logits_bytes

# h 64, 4 heads of 16 (q 64), 2 key-value heads (kv 32), intermediate 96, 3 layers.
H, HEADS, KV_HEADS, HEAD_DIM, INNER, LAYERS, VOCAB = 64, 4, 2, 16, 96, 3, 100
Q, KV = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM


def _config() -> LlamaConfig:
    return LlamaConfig(hidden_size=H, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                       head_dim=HEAD_DIM, intermediate_size=INNER, num_hidden_layers=LAYERS,
                       vocab_size=VOCAB, tie_word_embeddings=True)


def _wrapped(peft_config=None) -> torch.nn.Module:
    with torch.device("meta"):
        model = LlamaForCausalLM(_config())
        return get_peft_model(model, peft_config) if peft_config is not None else model


def test_linear_groups_by_the_input_they_read():
    assert [linear_group(n) for n in ("self_attn.q_proj", "self_attn.v_proj.base_layer",
                                      "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")] \
        == ["qkv", "qkv", "o", "up", "down"]
    # BERT: the attention's output dense is "o", the layer's output dense is "down".
    assert [linear_group(n) for n in ("attention.self.query", "attention.output.dense",
                                      "intermediate.dense", "output.dense")] \
        == ["qkv", "o", "up", "down"]
    assert linear_group("input_layernorm") is None


def test_profiles_of_full_fine_tuning_lora_and_ia3():
    layer = _wrapped().model.layers[0]
    assert profile_layer(layer) == LayerProfile(frozenset({"qkv", "o", "up", "down"}), 0, 0, 2)
    lora = _wrapped(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.1))
    # Dropout: each adapted layer keeps its own dropped copy (h wide) and nothing else.
    assert profile_layer(lora.base_model.model.model.layers[0]) == LayerProfile(
        frozenset(), dropout_copies=2 * H, ranks=8, trained_rms_norms=0)
    no_dropout = _wrapped(LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                     lora_dropout=0.0))
    assert profile_layer(no_dropout.base_model.model.model.layers[0]) == LayerProfile(
        frozenset({"qkv", "down"}), dropout_copies=0, ranks=8, trained_rms_norms=0)
    ia3 = _wrapped(IA3Config(target_modules=["k_proj", "down_proj"],
                             feedforward_modules=["down_proj"]))
    assert profile_layer(ia3.base_model.model.model.layers[0]).kept_inputs == {"qkv", "down"}


def test_layer_bytes_by_hand_for_eager_attention_with_grouped_queries():
    shapes = LayerShapes.of(_config())
    assert (shapes.query_width, shapes.kv_width, shapes.intermediate) == (Q, KV, INNER)
    s = 8  # sequence length: the attention probabilities are HEADS * s per token
    frozen = layer_bytes_per_token(shapes, LayerProfile(), length=s, element_bytes=4,
                                   gated_mlp=True, eager_attention=True)
    # norm inputs 2h, gate/up/act 3i, q and keys and values repeated to 4 heads 3q, probs
    assert frozen == 4 * (2 * H + 3 * INNER + 3 * Q + HEADS * s)
    lora = LayerProfile(frozenset(), dropout_copies=2 * H, ranks=8)
    assert layer_bytes_per_token(shapes, lora, length=s, element_bytes=4, gated_mlp=True,
                                 eager_attention=True) == frozen + 4 * (2 * H + 8) + 2 * H
    full = LayerProfile(frozenset({"qkv", "o", "up", "down"}), trained_rms_norms=2)
    assert layer_bytes_per_token(shapes, full, length=s, element_bytes=2, gated_mlp=True,
                                 eager_attention=True) == frozen / 2 + 2 * (
        H + Q + H + INNER + 2 * H)
    # SDPA keeps queries, keys and values as the model has them (kv wide), and its output.
    sdpa = layer_bytes_per_token(shapes, LayerProfile(), length=s, element_bytes=4,
                                 gated_mlp=True, eager_attention=False)
    assert sdpa == 4 * (2 * H + 3 * INNER + 2 * Q + 2 * KV)


def test_activations_add_the_layers_the_outside_and_one_layer_of_gradients():
    per_token = layer_bytes_per_token(LayerShapes.of(_config()), LayerProfile(), length=8,
                                      element_bytes=4, gated_mlp=True, eager_attention=True)
    tokens = 2 * 8
    kept = activation_bytes(_config(), batch_size=2, length=8, element_bytes=4, gated_mlp=True,
                            eager_attention=True, checkpointed=False, profile=LayerProfile(),
                            head_positions=6, head_trains=True)
    assert kept == (LAYERS + 1) * tokens * per_token + 4 * (tokens * H + 6 * H)
    checkpointed = activation_bytes(
        _config(), batch_size=2, length=8, element_bytes=4, gated_mlp=True,
        eager_attention=True, checkpointed=True, profile=LayerProfile(), head_positions=6,
        head_trains=False)
    # each layer's input, one layer recomputed and its gradients
    assert checkpointed == 4 * LAYERS * tokens * H + 2 * tokens * per_token + 4 * tokens * H


def test_logits_are_the_fp32_log_softmax_and_two_gradients():
    assert logits_bytes(positions=12, width=VOCAB) == 3 * 12 * VOCAB * 4


@pytest.fixture(scope="module")
def tiny_config_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama-config")
    config = _config()
    config.architectures = ["LlamaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder


def test_a_generative_cell_counts_its_lm_head_logits_at_the_completion(tiny_config_folder):
    spec = CellSpec(model=str(tiny_config_folder), task="t", strategy="lora", batch_size=2,
                    max_length=16, precision="fp32")
    three = estimate_cell_memory(spec, 1, on_gpu=False, generative=True, completion_tokens=3,
                                 length=10)
    assert three.logits_bytes == logits_bytes(2 * 3, VOCAB) and three.length == 10
    every = estimate_cell_memory(spec, 1, on_gpu=False, generative=True, length=10)
    assert every.logits_bytes == logits_bytes(2 * 10, VOCAB)  # no completion length: all
    classifier = estimate_cell_memory(spec, 4, on_gpu=False)
    assert classifier.logits_bytes == logits_bytes(2, 4) and classifier.length == 16


def test_qlora_counts_its_load_peak_and_one_dequantized_weight(tiny_config_folder):
    spec = CellSpec(model=str(tiny_config_folder), task="t", strategy="qlora", batch_size=2,
                    max_length=16, precision="fp32")
    qlora = estimate_cell_memory(spec, 1, on_gpu=False, generative=True, completion_tokens=2)
    assert qlora.dequantized_bytes == 4 * H * INNER  # gate, up and down are the largest
    parameters = sum(p.numel() for p in _wrapped().parameters())
    assert qlora.loading_bytes == 4 * parameters + qlora.weights_bytes
    assert qlora.total_bytes == max(qlora.training_bytes, qlora.loading_bytes)
    linear = LAYERS * (2 * H * Q + 2 * H * KV + 3 * H * INNER)
    assert qlora.weights_bytes < 4 * (parameters - linear) + linear * nf4_bytes_per_value(True) \
        + 4 * 10_000  # the 4-bit linears, the rest in fp32, and the small adapters
