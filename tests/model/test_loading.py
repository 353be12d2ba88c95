"""Loading a model and its tokenizer for classification (cell.modeling): the head sized and
named by the task's labels, the dtype and attention asked for, the pad token matched, and a
model no cell could use refused in one line before any training."""

from __future__ import annotations

import json

import pytest
import torch

from peft_arena.common.errors import UserError
from peft_arena.model.loading import check_model, load_model, load_tokenizer, transformers_model
from tests.support.synthetic import KEYWORDS


def test_the_head_has_the_tasks_labels_in_their_order(tiny_bert) -> None:
    labels = ["river", "guitar", "apple"]
    model = load_model(str(tiny_bert), labels, on_gpu=False)
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    assert model.config.id2label == {0: "river", 1: "guitar", 2: "apple"}
    assert model.config.label2id == {"river": 0, "guitar": 1, "apple": 2}


def test_every_weight_has_the_dtype_asked_for(tiny_bert) -> None:
    assert {p.dtype for p in load_model(str(tiny_bert), KEYWORDS, on_gpu=False).parameters()} \
        == {torch.float32}
    half = load_model(str(tiny_bert), KEYWORDS, on_gpu=False, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def test_eager_attention_trains_on_cpu_and_sdpa_on_gpu(tiny_bert) -> None:
    on_cpu = load_model(str(tiny_bert), KEYWORDS, on_gpu=False)
    assert on_cpu.config._attn_implementation == "eager"
    # The choice only: the model loads on the CPU here either way.
    for_gpu = load_model(str(tiny_bert), KEYWORDS, on_gpu=True)
    assert for_gpu.config._attn_implementation == "sdpa"
    chosen = load_model(str(tiny_bert), KEYWORDS, on_gpu=True, attention="eager")
    assert chosen.config._attn_implementation == "eager"


def test_the_model_pads_with_its_tokenizers_pad_token(tiny_bert, tiny_llama) -> None:
    tokenizer = load_tokenizer(str(tiny_bert))
    assert tokenizer.padding_side == "right"
    assert load_model(str(tiny_bert), KEYWORDS, on_gpu=False).config.pad_token_id \
        == tokenizer.pad_token_id
    # A decoder without a pad token gets one from its tokenizer, and the model knows it.
    decoder_tokenizer = load_tokenizer(str(tiny_llama))
    assert decoder_tokenizer.pad_token_id is not None
    decoder = load_model(str(tiny_llama), KEYWORDS, on_gpu=False)
    assert decoder.config.pad_token_id == decoder_tokenizer.pad_token_id
    # A pad token given by the caller wins.
    assert load_model(str(tiny_bert), KEYWORDS, on_gpu=False,
                      pad_token_id=5).config.pad_token_id == 5


def test_the_body_is_the_checkpoints_and_the_model_classifies(tiny_bert) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(tiny_bert / "model.safetensors"))
    model = load_model(str(tiny_bert), KEYWORDS, on_gpu=False).eval()
    for name, weight in model.state_dict().items():
        if name in saved:
            assert torch.equal(weight, saved[name]), name
    assert any(name.startswith("bert.encoder") for name in saved)
    tokenizer = load_tokenizer(str(tiny_bert))
    batch = tokenizer(["the apple of the river", "a guitar"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 3)


def test_the_transformers_model_is_found_inside_a_peft_wrapper(tiny_bert) -> None:
    from peft import LoraConfig, get_peft_model

    model = load_model(str(tiny_bert), KEYWORDS, on_gpu=False)
    assert transformers_model(model) is model
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["query"]))
    assert transformers_model(wrapped) is model


@pytest.mark.parametrize("what", ["an empty folder", "a config with no model type",
                                  "an unreachable Hub id"])
def test_a_model_that_cannot_load_is_one_line(what, tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    if what == "a config with no model type":
        (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    name = "nobody/no-such-model" if what == "an unreachable Hub id" else str(folder)
    with pytest.raises(UserError) as info:
        load_model(name, KEYWORDS, on_gpu=False)
    message = str(info.value)
    assert "\n" not in message and name in message
    with pytest.raises(UserError):
        check_model(name)


def test_check_model_passes_a_model_a_cell_can_train(tiny_bert, tiny_llama) -> None:
    assert check_model(str(tiny_bert)) is None
    assert check_model(str(tiny_llama), gradient_checkpointing=True) is None
