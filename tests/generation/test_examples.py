"""A user's generative rows: prompt + completion columns, or chat messages, and bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from transformers import BertConfig, LlamaConfig

from peft_arena.common.errors import UserError
from peft_arena.generation.examples import label_examples, read_examples
from peft_arena.generation.models import check_generative, is_generative
from peft_arena.generation.prompts import Example

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour?"},
        {"role": "assistant", "content": "red"}]


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        pd.DataFrame([{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()}
                      for r in rows]).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_prompt_and_completion_columns(tmp_path, suffix):
    path = _write(tmp_path / f"train{suffix}", [{"prompt": "2+2=", "completion": "4"},
                                               {"prompt": "3+3=", "completion": "6"}])
    assert read_examples(path) == [Example("2+2=", "4"), Example("3+3=", "6")]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_messages_in_chat_form(tmp_path, suffix):
    path = _write(tmp_path / f"train{suffix}", [{"messages": CHAT}])
    [example] = read_examples(path)
    assert example.answer == "red" and example.text == "Colour?"
    assert example.messages == tuple(CHAT[:2])


def test_the_last_assistant_turn_is_the_completion(tmp_path):
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    [example] = read_examples(_write(tmp_path / "t.jsonl", [{"messages": turns}]))
    assert (example.text, example.answer, len(example.messages)) == ("c", "d", 3)


def test_label_examples_answer_with_the_label_name():
    assert label_examples(["x", "y"], [1, 0], ["neg", "pos"]) == [Example("x", "pos"),
                                                                  Example("y", "neg")]


@pytest.mark.parametrize(("rows", "message"), [
    ([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "  "}],
     r"row 2 has an empty completion"),
    ([{"prompt": "a", "completion": None}], r"row 1 has an empty completion"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], r"row 1: the messages have no "
                                                           r"assistant turn"),
    ([{"messages": [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": ""}]}], r"row 1 has an empty completion"),
    ([{"messages": [{"role": "robot", "content": "hi"}]}], r"every turn needs a role"),
    ([{"question": "a", "answer": "b"}], r"no column 'prompt'"),
])
def test_bad_rows_are_one_line_errors(tmp_path, rows, message):
    path = _write(tmp_path / "train.jsonl", rows)
    with pytest.raises(UserError, match=message) as caught:
        read_examples(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_an_encoder_without_an_lm_head_cannot_generate():
    minilm = BertConfig(architectures=["BertModel"])
    assert not is_generative(minilm) and not is_generative(BertConfig())
    with pytest.raises(UserError, match=r"Model 'minilm' \(BertModel\) has no language-model "
                                        r"head.*'agnews-gen'"):
        check_generative("minilm", minilm, "agnews-gen")
    assert is_generative(LlamaConfig(architectures=["LlamaForCausalLM"]))
    assert is_generative(LlamaConfig())
    check_generative("smollm2", LlamaConfig(architectures=["LlamaForCausalLM"]), "agnews-gen")
