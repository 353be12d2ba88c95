"""Batched greedy decoding with left padding: the same answers as one prompt at a time."""

from __future__ import annotations

import torch

from peft_arena.generation.decode import greedy_decode, left_padded
from peft_arena.generation.prompts import Example, PromptFormat, encode
from tests.support.generation import random_llama

TEXTS = ["the apple", "a river of the guitar that was in the", "one", "his guitar is red",
         "they have the apple and the river and the guitar at one"]


def test_left_padding_puts_every_prompt_against_the_right_edge():
    batch = left_padded([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_decoding_equals_one_prompt_at_a_time(chat_tokenizer):
    model = random_llama(chat_tokenizer)
    encoded = encode([Example(t, "red") for t in TEXTS], PromptFormat(), chat_tokenizer, 64)
    batched = greedy_decode(model, chat_tokenizer, encoded.prompt_ids, max_new_tokens=6,
                            batch_size=3)
    alone = greedy_decode(model, chat_tokenizer, encoded.prompt_ids, max_new_tokens=6,
                          batch_size=1)
    assert batched.token_ids == alone.token_ids
    assert batched.texts == alone.texts and len(batched.texts) == len(TEXTS)
    # By hand for the first prompt: argmax, appended, six times (or until eos).
    ids = torch.as_tensor(encoded.prompt_ids[0])[None]
    expected = []
    with torch.no_grad():
        for _ in range(6):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            if token == chat_tokenizer.eos_token_id:
                break
            expected.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert batched.token_ids[0] == expected
    assert all(len(ids) <= 6 for ids in batched.token_ids)
    assert 0 < batched.new_tokens <= 6 * len(TEXTS)
    assert batched.seconds > 0 and batched.tokens_per_s > 0
    assert batched.phase()["examples"] == len(TEXTS)
