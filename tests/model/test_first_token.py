"""The last layer computed for the first token only: same logits and gradients, fewer FLOPs."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from peft_arena.config.spec import CellSpec
from peft_arena.measure.flops import FlopModel
from peft_arena.model.first_token import compute_last_layer_for_first_token
from peft_arena.strategies import load_strategies
from tests.support.same_outputs import assert_same_logits_and_gradients


def _pair(path, strategy: str, attention: str):
    spec = CellSpec(model=str(path), task="synth", strategy=strategy)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=3, attn_implementation=attention, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    model = load_strategies().get(strategy)(spec).wrap(model, 10)
    pruned = copy.deepcopy(model)
    assert compute_last_layer_for_first_token(pruned)
    return model, pruned


def _batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 90, (4, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padded rows: the first token must not attend to them
    mask[3, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])}


@pytest.mark.parametrize("kind", ["tiny_bert", "tiny_roberta"])
@pytest.mark.parametrize("strategy", ["full", "lora", "ia3"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_same_logits_and_gradients(kind, strategy, attention, request):
    model, pruned = _pair(request.getfixturevalue(kind), strategy, attention)
    batch = _batch()
    model.eval(), pruned.eval()
    assert_same_logits_and_gradients(model, pruned, batch)


def test_padding_beyond_the_text_changes_nothing(tiny_bert):
    _, pruned = _pair(tiny_bert, "full", "eager")
    pruned.eval()
    ids = torch.randint(5, 90, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        short = pruned(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        long = pruned(input_ids=padded, attention_mask=mask).logits
    assert torch.allclose(short, long, atol=1e-5)


def test_flops_count_the_pruned_layer_per_sequence(tiny_bert):
    model, pruned = _pair(tiny_bert, "full", "eager")
    full, less = FlopModel.of(model), FlopModel.of(pruned)
    layers = model.config.num_hidden_layers
    hidden, inner = model.config.hidden_size, model.config.intermediate_size
    # Per token the last layer keeps only its key and value projections.
    moved = 3 * 2 * (2 * hidden * hidden + 2 * hidden * inner)  # query, output, FFN: fwd+bwd
    one_query_attention = 12 * hidden
    assert full.per_token_flops - less.per_token_flops == moved - one_query_attention
    assert less.per_sequence_flops - full.per_sequence_flops == moved
    assert (full.attention_layers, less.attention_layers) == (layers, layers - 1)


def test_other_models_are_left_alone(tiny_llama):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=3)
    assert not compute_last_layer_for_first_token(model)
    assert not any(getattr(m, "first_token_only", False) for m in model.modules())
