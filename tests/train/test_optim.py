"""The optimizer: one learning rate, or the classification head at a rate of its own."""

from __future__ import annotations

import hashlib
import json

import pytest

from peft_arena.common.errors import UserError
from peft_arena.config.spec import HASHED_WHEN_SET, RUN_ONLY_KEYS, CellSpec
from peft_arena.model.loading import load_model
from peft_arena.strategies import load_strategies
from peft_arena.train.optim import build_optimizer, is_head_parameter


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_head_parameters_get_the_head_rate_and_the_rest_the_body_rate(tiny_bert, strategy):
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy=strategy)
    model = load_strategies().get(strategy)(spec).wrap(
        load_model(str(tiny_bert), ["a", "b", "c"], on_gpu=False), total_steps=10)
    optimizer = build_optimizer(model, 1e-4, 0.01, head_learning_rate=3e-2)
    names = {id(p): n for n, p in model.named_parameters()}
    body, head = optimizer.param_groups
    assert body["lr"] == 1e-4 and head["lr"] == 3e-2
    assert head["params"] and all("classifier" in names[id(p)] for p in head["params"])
    assert not any("classifier" in names[id(p)] for p in body["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable


def test_without_a_head_rate_there_is_one_group(tiny_bert):
    model = load_model(str(tiny_bert), ["a", "b", "c"], on_gpu=False)
    (group,) = build_optimizer(model, 1e-4, 0.0).param_groups
    assert group["lr"] == 1e-4 and len(group["params"]) == len(list(model.parameters()))


def test_head_names():
    bert, distilbert, decoder = ["classifier"], ["pre_classifier", "classifier"], ["score"]
    assert is_head_parameter("base_model.model.classifier.modules_to_save.default.weight", bert)
    assert is_head_parameter("pre_classifier.bias", distilbert)
    assert is_head_parameter("score.weight", decoder)
    assert not is_head_parameter("bert.pooler.dense.weight", bert)
    assert not is_head_parameter("bert.encoder.layer.0.attention.self.query.weight", bert)
    assert not is_head_parameter("model.layers.0.self_attn.score.weight", decoder)


def test_an_unset_head_rate_leaves_the_cell_identity_as_before():
    spec = CellSpec(model="minilm", task="banking77", strategy="lora")
    with_rate = CellSpec(model="minilm", task="banking77", strategy="lora",
                         head_learning_rate=2e-2)
    # The hash of a cell made before the setting existed: the same dict without the keys
    # added since (each left out of the hash while unset).
    data = spec.to_dict()
    for key in ("seed", *RUN_ONLY_KEYS, *HASHED_WHEN_SET):
        data.pop(key)
    old = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    assert spec.config_hash() == old[:10]
    assert with_rate.config_hash() != spec.config_hash()


def test_a_zero_head_rate_is_refused():
    with pytest.raises(UserError, match="head_learning_rate must be > 0"):
        CellSpec(model="minilm", task="banking77", strategy="lora", head_learning_rate=0)
