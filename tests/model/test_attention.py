"""Evaluation passes switch to SDPA attention and hand the training attention back."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from peft_arena.config.spec import CellSpec
from peft_arena.model.dropout import ATTENTION_NAME, use_fast_dropout
from peft_arena.model.loading import inference_attention
from peft_arena.strategies import load_strategies


def test_evaluation_runs_sdpa_with_the_same_outputs_then_restores(tiny_bert):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, attn_implementation="eager")
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy="lora")
    model = load_strategies().get("lora")(spec).wrap(model, 10)
    use_fast_dropout(model)
    model.eval()
    ids = torch.randint(5, 1000, (4, 11))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    config = model.get_base_model().config
    with torch.inference_mode():
        training_logits = model(input_ids=ids, attention_mask=mask).logits
        with inference_attention(model):
            assert config._attn_implementation == "sdpa"
            eval_logits = model(input_ids=ids, attention_mask=mask).logits
    assert config._attn_implementation == ATTENTION_NAME
    assert torch.allclose(training_logits, eval_logits, atol=1e-5)
