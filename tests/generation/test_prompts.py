"""Prompts rendered from a template, tokenized apart from the completion, and truncated."""

from __future__ import annotations

import pytest

from peft_arena.common.errors import UserError
from peft_arena.generation.prompts import (
    Example,
    PromptFormat,
    check_label_tokens,
    describe,
    encode,
)
from tests.support.generation import make_chat_tokenizer

TEMPLATE = "Classify the text.\n{text}\nTopic:"
LONG = " ".join(["the apple is in the river"] * 60)


def _ids(tokenizer, text: str, specials: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=specials)["input_ids"]


def test_plain_prompt_and_completion_are_tokenized_apart(plain_tokenizer):
    encoded = encode([Example("a red apple", "red")], PromptFormat(TEMPLATE), plain_tokenizer,
                     64)
    prompt, completion = encoded.prompt_ids[0].tolist(), encoded.completion_ids[0].tolist()
    assert not encoded.chat
    assert encoded.example_prompt == "Classify the text.\na red apple\nTopic:"
    # The prompt as the tokenizer encodes it alone (with its BOS), the answer after a space
    # as its own tokens, then the end-of-sequence token.
    assert prompt == _ids(plain_tokenizer, encoded.example_prompt, True)
    assert prompt[0] == plain_tokenizer.bos_token_id
    assert completion == [*_ids(plain_tokenizer, " red", False), plain_tokenizer.eos_token_id]
    assert plain_tokenizer.decode(prompt + completion, skip_special_tokens=True) == \
        "Classify the text.\na red apple\nTopic: red"


def test_chat_prompt_uses_the_tokenizer_template_without_a_second_bos(chat_tokenizer):
    fmt = PromptFormat(TEMPLATE, system="Answer with one word.")
    encoded = encode([Example("a red apple", "red")], fmt, chat_tokenizer, 64)
    assert encoded.chat
    assert encoded.example_prompt == (
        "<|im_start|>system\nAnswer with one word.<|im_end|>\n"
        "<|im_start|>user\nClassify the text.\na red apple\nTopic:<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert encoded.prompt_ids[0].tolist() == _ids(chat_tokenizer, encoded.example_prompt, False)
    assert encoded.completion_ids[0].tolist() == [*_ids(chat_tokenizer, "red", False),
                                                  chat_tokenizer.eos_token_id]
    record = describe(fmt, chat_tokenizer, encoded)
    assert record["chat_template"] is True and record["chat_template_sha256"]
    assert record["example_prompt"] == encoded.example_prompt
    assert record["truncated_examples"] == 0


def test_chat_never_renders_plain_text(chat_tokenizer):
    encoded = encode([Example("x", "red")], PromptFormat(TEMPLATE, chat="never"),
                     chat_tokenizer, 64)
    assert not encoded.chat and encoded.example_prompt == "Classify the text.\nx\nTopic:"


@pytest.mark.parametrize("tokenizer_name", ["plain", "chat"])
def test_truncation_cuts_the_text_never_the_template_end_or_the_answer(
        tokenizer_name, plain_tokenizer, chat_tokenizer):
    tokenizer = {"plain": plain_tokenizer, "chat": chat_tokenizer}[tokenizer_name]
    fmt = PromptFormat(TEMPLATE)
    max_length = 40
    assert len(_ids(tokenizer, LONG, False)) > 3 * max_length
    short = encode([Example("a red apple", "blue")], fmt, tokenizer, max_length)
    encoded = encode([Example(LONG, "blue"), Example("a red apple", "blue")], fmt, tokenizer,
                     max_length)
    assert encoded.truncated == 1
    prompt, completion = encoded.prompt_ids[0].tolist(), encoded.completion_ids[0].tolist()
    assert len(prompt) + len(completion) <= max_length
    assert len(prompt) + len(completion) >= max_length - 2  # the room is used
    assert completion == short.completion_ids[0].tolist()  # the answer whole
    # The template's end (and, for chat, the assistant header) stays.
    end = "\nTopic:" + ("<|im_end|>\n<|im_start|>assistant\n" if encoded.chat else "")
    assert tokenizer.decode(prompt).endswith(end)
    text = tokenizer.decode(prompt, skip_special_tokens=True)
    kept = text.split("Classify the text.\n", 1)[1].rsplit("\nTopic:", 1)[0]
    assert kept and LONG.startswith(kept.strip()) and len(kept) < len(LONG) // 2
    # The other example is untouched.
    assert encoded.prompt_ids[1].tolist() == short.prompt_ids[0].tolist()


@pytest.mark.parametrize("tokenizer_name", ["plain", "chat"])
def test_a_cut_prompt_says_nothing_of_its_answer(tokenizer_name, plain_tokenizer,
                                                 chat_tokenizer):
    """The same long text with a short and a long answer is cut to the same prompt: the
    prompt's length must not tell the model how long its answer is."""
    tokenizer = {"plain": plain_tokenizer, "chat": chat_tokenizer}[tokenizer_name]
    fmt = PromptFormat(TEMPLATE)
    short_answer, long_answer = "blue", "a longer answer"
    examples = [Example(LONG, short_answer), Example(LONG, long_answer)]
    encoded = encode(examples, fmt, tokenizer, 80)
    assert len(encoded.completion_ids[1]) > len(encoded.completion_ids[0]) + 2
    assert encoded.prompt_ids[0].tolist() == encoded.prompt_ids[1].tolist()
    # Alone, the short-answer example is cut by a room set from its own split only: a split
    # with the long answer in it cuts it shorter, and a room given explicitly is honoured.
    alone = encode(examples[:1], fmt, tokenizer, 80)
    assert len(alone.prompt_ids[0]) > len(encoded.prompt_ids[0])
    roomy = encode(examples[:1], fmt, tokenizer, 80,
                   answer_room=len(encoded.completion_ids[1]))
    assert roomy.prompt_ids[0].tolist() == encoded.prompt_ids[0].tolist()


def test_truncation_of_a_chat_form_example_cuts_its_last_user_turn(chat_tokenizer):
    turns = ({"role": "user", "content": "hello"}, {"role": "assistant", "content": "red"},
             {"role": "user", "content": LONG})
    encoded = encode([Example(LONG, "blue", messages=turns)], PromptFormat(), chat_tokenizer,
                     48)
    prompt = chat_tokenizer.decode(encoded.prompt_ids[0])
    assert encoded.truncated == 1
    assert len(encoded.prompt_ids[0]) + len(encoded.completion_ids[0]) <= 48
    assert prompt.startswith("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nred")
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_a_template_and_answer_longer_than_max_length_is_an_error(plain_tokenizer):
    with pytest.raises(UserError, match="raise max_length"):
        encode([Example(LONG, "blue")], PromptFormat(TEMPLATE), plain_tokenizer, 8)


def test_no_chat_template_when_one_was_asked_for(plain_tokenizer):
    with pytest.raises(UserError, match=r"has no chat template.*chat_template: always"):
        encode([Example("x", "red")], PromptFormat(TEMPLATE, chat="always"), plain_tokenizer,
               64)
    turns = ({"role": "user", "content": "x"},)
    with pytest.raises(UserError, match=r"has no chat template.*chat messages"):
        encode([Example("x", "red", messages=turns)], PromptFormat(), plain_tokenizer, 64)


def test_a_label_name_that_tokenizes_to_nothing_is_an_error(plain_tokenizer):
    check_label_tokens(plain_tokenizer, ["red", "blue"], chat=False)
    with pytest.raises(UserError, match="Label name '' tokenizes to no tokens"):
        check_label_tokens(plain_tokenizer, ["red", ""], chat=False)
    with pytest.raises(UserError, match="tokenizes to no tokens"):
        check_label_tokens(make_chat_tokenizer(), ["red", "  "], chat=True)


@pytest.mark.parametrize("template", ["no placeholder", "{text} and {text}"])
def test_a_template_needs_one_placeholder(template):
    with pytest.raises(UserError, match="exactly one"):
        PromptFormat(template)
