"""The real SmolLM2-135M-Instruct through the `smollm2` alias (the smollm2 extra, which CI
installs): its padding as the classifier reads it, and a few steps of LoRA and IA3 on real AG
News rows lowering the loss. The GGUF file is converted once per test session (~30 s)."""

from __future__ import annotations

import json

import pytest
import torch

from peft_arena.config.gguf_source import model_source
from peft_arena.config.presets import resolve_model_path
from peft_arena.config.spec import CellSpec
from peft_arena.model.last_token import compute_last_layer_for_last_token
from peft_arena.model.loading import load_model, load_tokenizer
from peft_arena.strategies import load_strategies
from peft_arena.train.optim import build_optimizer
from tests.support.paths import SHARED_DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def test_padding_is_what_the_classifier_reads():
    tokenizer = load_tokenizer("smollm2")
    # Its own pad token, which is also its end-of-text token; never appended by encoding.
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)
    assert tokenizer.eos_token_id == 2 and tokenizer.padding_side == "right"
    assert tokenizer("Stocks rallied")["input_ids"][-1] != 2
    model = load_model("smollm2", LABELS, on_gpu=False)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.pad_token_id == 2
    assert compute_last_layer_for_last_token(model)
    model.eval()
    texts = ["Stocks rallied on Wall Street as oil fell", "Federer wins"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        padded = model(**batch).logits
        alone = model(**tokenizer(texts[1:], return_tensors="pt")).logits
    assert torch.allclose(padded[1:], alone, atol=1e-4)  # the head read the last real token
    source = model_source(resolve_model_path("smollm2"))
    assert source["quantization"] == "Q4_1" and source["dequantized"] is True
    assert source["architecture"] == "llama" and source["tensor_types"]["Q4_1"] > 200


def _agnews_rows(n: int) -> tuple[list[str], list[int]]:
    rows = [json.loads(line) for line in
            (SHARED_DATA / "agnews" / "train.jsonl").read_text().splitlines()[:2000]]
    per_label: dict[int, list[str]] = {}
    for row in rows:
        per_label.setdefault(row["label"], []).append(row["text"])
    picked = [(text, label) for label, texts in sorted(per_label.items())
              for text in texts[: n // len(per_label)]]
    return [t for t, _ in picked], [label for _, label in picked]


@pytest.mark.skipif(not (SHARED_DATA / "agnews").is_dir(),
                    reason=f"real data not found at {SHARED_DATA} "
                           "(set PEFT_ARENA_SHARED_DATA to its folder)")
@pytest.mark.parametrize("strategy, learning_rate", [("lora", 3e-3), ("ia3", 2e-2)])
def test_a_few_steps_lower_the_loss(strategy, learning_rate):
    tokenizer = load_tokenizer("smollm2")
    texts, labels = _agnews_rows(16)
    batch = {**tokenizer(texts, padding=True, truncation=True, max_length=48,
                         return_tensors="pt"), "labels": torch.tensor(labels)}
    spec = CellSpec(model="smollm2", task="agnews", strategy=strategy,
                    learning_rate=learning_rate)
    torch.manual_seed(0)
    model = load_strategies().get(strategy)(spec).wrap(
        load_model("smollm2", LABELS, on_gpu=False), 8)
    compute_last_layer_for_last_token(model)
    # The embedding (28M of 134.5M weights) stays frozen: no dense gradient for it.
    assert not model.get_base_model().model.embed_tokens.weight.requires_grad
    optimizer = build_optimizer(model, learning_rate, 0.0, None)
    model.train()
    with torch.no_grad():
        before = model(**batch).loss.item()
    for _ in range(6):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = model(**batch).loss.item()
    assert after < 0.8 * before, (before, after)
