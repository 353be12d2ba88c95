"""The last decoder layer computed for the read position only: same logits and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peft_arena.config.spec import CellSpec
from peft_arena.measure.flops import FlopModel
from peft_arena.model.last_token import compute_last_layer_for_last_token
from peft_arena.model.padding import match_pad_token, prepare_padding
from peft_arena.strategies import load_strategies
from tests.support.same_outputs import assert_same_logits_and_gradients


def _pair(path, strategy: str, attention: str):
    tokenizer = prepare_padding(AutoTokenizer.from_pretrained(path), str(path))
    spec = CellSpec(model=str(path), task="synth", strategy=strategy)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=3, attn_implementation=attention)
    match_pad_token(model.config, tokenizer.pad_token_id)
    model = load_strategies().get(strategy)(spec).wrap(model, 10)
    pruned = copy.deepcopy(model)
    assert compute_last_layer_for_last_token(pruned)
    return model, pruned, tokenizer


def _batch(tokenizer):
    texts = ["the apple is on the river", "a guitar", "one of the river and the apple was it",
             "river"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # rows of different lengths: right padding
    return {**batch, "labels": torch.tensor([0, 2, 1, 2])}


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_qwen2", "tiny_mistral"])
@pytest.mark.parametrize("strategy", ["full", "lora", "ia3"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_same_logits_and_gradients(kind, strategy, attention, request):
    model, pruned, tokenizer = _pair(request.getfixturevalue(kind), strategy, attention)
    batch = _batch(tokenizer)
    model.eval(), pruned.eval()
    assert_same_logits_and_gradients(model, pruned, batch)


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_qwen2"])
def test_training_mode_too(kind, request):
    """Switching modes must keep the pruning (the `kernels` package resets the norm's
    forward on train() and eval()); these models have no dropout, so full fine-tuning's
    outputs are deterministic in training mode."""
    model, pruned, tokenizer = _pair(request.getfixturevalue(kind), "full", "eager")
    batch = _batch(tokenizer)
    pruned.eval(), pruned.train(), model.train()
    expected, got = model(**batch), pruned(**batch)
    assert torch.allclose(expected.logits, got.logits, atol=1e-5)
    assert torch.allclose(expected.loss, got.loss, atol=1e-6)


def test_unpadded_batch_and_single_row(tiny_llama):
    """No padding at all: SDPA's causal fast path passes no mask, which the layer builds."""
    model, pruned, tokenizer = _pair(tiny_llama, "full", "sdpa")
    model.eval(), pruned.eval()
    ids = tokenizer(["the apple is on the river", "a guitar of the river one"],
                    padding=True, return_tensors="pt")
    with torch.no_grad():
        for batch in (ids, {k: v[:1] for k, v in ids.items()}):
            assert torch.allclose(model(**batch).logits, pruned(**batch).logits, atol=1e-5)


def test_flops_count_the_pruned_layer_per_sequence(tiny_llama):
    model, pruned, _ = _pair(tiny_llama, "full", "eager")
    full, less = FlopModel.of(model), FlopModel.of(pruned)
    config = model.config
    hidden, inner = config.hidden_size, config.intermediate_size
    # Per token the last layer keeps only its key and value projections (GQA: narrower).
    query_and_output = 2 * hidden * hidden
    mlp = 3 * hidden * inner
    moved = 3 * 2 * (query_and_output + mlp)  # forward, input and weight gradients
    one_query_attention = 12 * hidden
    assert full.per_token_flops - less.per_token_flops == moved - one_query_attention
    assert less.per_sequence_flops - full.per_sequence_flops == moved
    layers = config.num_hidden_layers
    assert (full.attention_layers, less.attention_layers) == (layers, layers - 1)


def test_other_models_are_left_alone(tiny_gpt2, tiny_bert):
    for path in (tiny_gpt2, tiny_bert):
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
        assert not compute_last_layer_for_last_token(model)
