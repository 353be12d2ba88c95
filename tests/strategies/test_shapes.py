"""Shape-dependent settings fitted to the model: over many layer widths the fitted value is
valid and the largest valid one up to the default; on real tiny models of odd widths every
shape-fitted method builds and runs; a value the user set that cannot fit is one line."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.strategies import load_strategies
from peft_arena.strategies.shapes import RULES

# Widths of real models (MiniLM 384, BERT 768, SmolLM2 576, its k/v 192, Qwen2 896 ...) and
# awkward ones (primes, odd numbers, powers of two).
WIDTHS = sorted({*range(1, 65), 96, 127, 128, 192, 250, 256, 320, 384, 576, 640, 768, 896,
                 1000, 1024, 1536, 2048, 3072, 4096, 4864, 11008})


def _layer_sets(count: int = 300) -> list[list[tuple[int, int]]]:
    """Square layers of every width, then random sets of up to four (in, out) pairs."""
    draw = random.Random(0)
    sets = [[(w, w)] for w in WIDTHS]
    sets += [[(a, b)] for a, b in itertools.combinations(WIDTHS[::3], 2)]
    for _ in range(count):
        sets.append([(draw.choice(WIDTHS), draw.choice(WIDTHS))
                     for _ in range(draw.randint(1, 4))])
    return sets


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.peft_type}.{r.setting}")
def test_fitted_settings_are_always_valid_and_the_largest_below_the_default(rule):
    defaults = {"vector_length": 256, "block_size": 256, "group_size": 64, "oft_block_size": 32,
                "n_frequency": 2592, "r": 64}
    default = defaults[rule.setting]
    checked = 0
    for shapes in _layer_sets():
        fitted = rule.fit(default, shapes)
        if fitted is None:  # only when no value at all fits (RoAd on an odd output width)
            assert not any(rule.valid(v, shapes) for v in range(1, default + 1)), shapes
            continue
        assert 1 <= fitted <= default
        assert rule.valid(fitted, shapes), (shapes, fitted)
        assert not any(rule.valid(v, shapes) for v in range(fitted + 1, default + 1))
        checked += 1
    assert checked > 300


FITTED = ["vblora", "c3a", "road", "shira", "waveft", "miss", "psoft", "oft", "fourierft"]


def _tiny_bert(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=width, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=2 * width, max_position_embeddings=16, num_labels=3))


@pytest.mark.parametrize("width", [10, 94, pytest.param(24, marks=pytest.mark.slow),
                                   pytest.param(48, marks=pytest.mark.slow),
                                   pytest.param(96, marks=pytest.mark.slow)])
def test_shape_fitted_methods_build_on_odd_widths_and_say_what_they_fitted(width):
    ids = torch.randint(0, 64, (2, 6))
    for name in FITTED:
        strategy = load_strategies().get(name)(CellSpec(model="tiny", task="t", strategy=name))
        model = strategy.wrap(_tiny_bert(width), 10)
        model(input_ids=ids).logits.sum().backward()
        state = strategy.final_state(model)
        config = model.peft_config["default"]
        for setting, change in (state or {}).get("fitted_settings", {}).items():
            assert getattr(config, setting) == change["fitted"] < change["default"]
            assert change["rule"]


def test_minilm_widths_keep_most_defaults():
    """MiniLM (384 wide): VB-LoRA's 256 does not divide 384 and becomes 192; RoAd's 64 fits."""
    for name, expected in (("vblora", {"vector_length": 192}), ("road", {})):
        model = BertForSequenceClassification(BertConfig(
            vocab_size=64, hidden_size=384, num_hidden_layers=1, num_attention_heads=12,
            intermediate_size=1536, max_position_embeddings=16, num_labels=4))
        strategy = load_strategies().get(name)(CellSpec(model="m", task="t", strategy=name))
        strategy.wrap(model, 10)
        assert {k: v["fitted"] for k, v in strategy.fitted.items()} == expected


def test_a_value_the_user_set_that_cannot_fit_is_one_line():
    spec = CellSpec(model="tiny", task="t", strategy="vblora",
                    peft={**load_strategies().get("vblora").peft_defaults, "vector_length": 7})
    strategy = load_strategies().get("vblora")(spec)
    with pytest.raises(UserError, match=r"vblora.vector_length=7 does not fit") as caught:
        strategy.wrap(_tiny_bert(24), 10)
    assert "\n" not in str(caught.value)
