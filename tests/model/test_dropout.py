"""The cheaper-RNG dropout: same expectation, same gradients, same model outputs in eval."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from peft_arena.config.spec import CellSpec
from peft_arena.model import dropout
from peft_arena.model.loading import transformers_model
from peft_arena.strategies import load_strategies


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_expectation(p):
    torch.manual_seed(0)
    out = dropout.fast_dropout(torch.ones(400_000), p)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 0.005
    # Kept units are scaled so that the mean activation stays 1.
    assert abs(out.mean().item() - 1.0) < 0.01
    assert out.unique().numel() == 2


def test_gradient_passes_exactly_where_the_unit_was_kept():
    torch.manual_seed(0)
    x = torch.randn(64, 48, requires_grad=True)
    out = dropout.fast_dropout(x, 0.25)
    out.backward(torch.ones_like(out))
    kept = out != 0
    scale = (out[kept] / x[kept]).mean()
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept], scale.expand(int(kept.sum())))


def test_same_seed_same_mask_and_no_dropout_outside_training():
    x = torch.randn(1000)
    torch.manual_seed(3)
    first = dropout.fast_dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(first, dropout.fast_dropout(x, 0.1))
    assert torch.equal(dropout.fast_dropout(x, 0.1, training=False), x)
    assert torch.equal(dropout.fast_dropout(x, 1.0), torch.zeros_like(x))


@pytest.mark.parametrize("kind", ["tiny_bert", "tiny_roberta"])
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_swapped_model_matches_the_original_in_eval(kind, strategy, request):
    path = request.getfixturevalue(kind)
    spec = CellSpec(model=str(path), task="synth", strategy=strategy)
    torch.manual_seed(0)
    original = AutoModelForSequenceClassification.from_pretrained(
        path, attn_implementation="eager")
    original = load_strategies().get(strategy)(spec).wrap(original, 10)
    fast = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
    fast = load_strategies().get(strategy)(spec).wrap(fast, 10)
    fast.load_state_dict(original.state_dict())
    dropout.use_fast_dropout(fast)

    modules = list(fast.modules())
    assert not any(type(m) is nn.Dropout for m in modules)
    assert any(isinstance(m, dropout.FastDropout) for m in modules)
    base = transformers_model(fast)
    assert base.config._attn_implementation == dropout.ATTENTION_NAME

    ids = torch.randint(5, 1000, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding must stay masked under the swapped attention
    original.eval()
    fast.eval()
    with torch.inference_mode():
        expected = original(input_ids=ids, attention_mask=mask).logits
        got = fast(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(expected, got)


def test_training_step_drops_units(tiny_bert):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, attn_implementation="eager")
    dropout.use_fast_dropout(model)
    model.train()
    ids = torch.randint(5, 1000, (2, 9))
    first = model(input_ids=ids).logits
    second = model(input_ids=ids).logits
    assert not torch.equal(first, second)  # two different dropout masks
    first.sum().backward()
    grad = model.bert.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # gradients flow through every mask


def test_attention_in_training_is_the_textbook_formula_with_the_same_mask():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=generator, requires_grad=True)
               for _ in range(3))
    mask = torch.zeros(2, 1, 1, 7)
    mask[1, ..., 5:] = torch.finfo(torch.float32).min  # two padded keys in the second row
    module = nn.Module()  # training, as modules start
    torch.manual_seed(5)
    out, _ = dropout.eager_attention(module, q, k, v, mask.clone(), scaling=0.5, dropout=0.2)
    out.sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None

    keep_levels = dropout.LEVELS - round(0.2 * dropout.LEVELS)
    torch.manual_seed(5)
    keep = dropout._keep_mask(torch.Size((2, 3, 7, 7)), keep_levels)
    probabilities = torch.softmax(q @ k.transpose(2, 3) * 0.5 + mask, dim=-1)
    expected = (probabilities * keep * (dropout.LEVELS / keep_levels)) @ v
    expected = expected.transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-6)
    expected.sum().backward()
    for mine, textbook in zip(got, (q.grad, k.grad, v.grad), strict=True):
        assert torch.allclose(mine, textbook, atol=1e-6)
