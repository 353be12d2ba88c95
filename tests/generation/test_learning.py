"""A tiny Llama learns a two-label task by generating the label, and a chat-form user task
trains and decodes end to end."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from peft_arena.generation.collate import CompletionCollator
from peft_arena.generation.decode import greedy_decode
from peft_arena.generation.examples import label_examples, read_examples
from peft_arena.generation.loss import completion_loss
from peft_arena.generation.prompts import (
    PromptFormat,
    check_label_tokens,
    completion_ids,
    encode,
)
from peft_arena.generation.scoring import label_scores, parse_labels
from tests.support.generation import LABELS, random_llama
from tests.support.synthetic import FILLER

KEYWORDS = ["apple", "river"]  # label 0 (red), label 1 (blue)


def _rows(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), KEYWORDS[i % 2])
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


def _train(model, encoded, pad_id: int, *, steps: int, batch_size: int, lr: float,
           pack: bool) -> list[float]:
    collator = CompletionCollator(encoded.prompt_ids, encoded.completion_ids, pad_id,
                                  pack=pack)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(0)
    model.train()
    losses = []
    for _ in range(steps):
        batch = collator(rng.choice(len(encoded), size=batch_size, replace=False).tolist())
        loss = completion_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_a_tiny_llama_learns_a_two_label_generative_task(plain_tokenizer):
    torch.manual_seed(0)
    fmt = PromptFormat("Text: {text}\nColour:")
    check_label_tokens(plain_tokenizer, LABELS, chat=False)
    train = encode(label_examples(*_rows(256, 1), LABELS), fmt, plain_tokenizer, 32)
    test_texts, test_labels = _rows(40, 2)
    test = encode(label_examples(test_texts, test_labels, LABELS), fmt, plain_tokenizer, 32)
    model = random_llama(plain_tokenizer)
    longest = max(len(ids) for ids in completion_ids(plain_tokenizer, LABELS, chat=False))

    def scores():
        decoded = greedy_decode(model, plain_tokenizer, test.prompt_ids,
                                max_new_tokens=longest, batch_size=16)
        return label_scores(np.array(test_labels), parse_labels(decoded.texts, LABELS),
                            len(LABELS))

    before = scores()
    losses = _train(model, train, plain_tokenizer.pad_token_id, steps=60, batch_size=16,
                    lr=3e-3, pack=True)
    after = scores()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert before["accuracy"] < 0.6  # random weights: chance at best
    assert after["accuracy"] >= 0.85 and after["invalid_share"] <= 0.05, (before, after)


def test_a_user_task_in_chat_form_trains_and_decodes(tmp_path, chat_tokenizer):
    torch.manual_seed(0)
    texts, labels = _rows(96, 3)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "Name the colour."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": LABELS[label]}]}) + "\n"
        for text, label in zip(texts, labels, strict=True)), encoding="utf-8")
    examples = read_examples(path)
    encoded = encode(examples, PromptFormat(), chat_tokenizer, 48)
    assert encoded.chat and encoded.example_prompt.startswith(
        "<|im_start|>system\nName the colour.<|im_end|>\n<|im_start|>user\n")
    model = random_llama(chat_tokenizer)
    losses = _train(model, encoded, chat_tokenizer.pad_token_id, steps=40, batch_size=16,
                    lr=3e-3, pack=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    decoded = greedy_decode(model, chat_tokenizer, encoded.prompt_ids[:16], max_new_tokens=3)
    predicted = parse_labels(decoded.texts, LABELS)
    assert (predicted != -1).mean() >= 0.75  # it answers with a colour name
