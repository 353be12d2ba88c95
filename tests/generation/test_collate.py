"""Completion-only labels, and packing that gives the padded batch's loss and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peft_arena.generation.collate import (
    IGNORE,
    CompletionCollator,
    batch_sequences,
    batch_tokens,
    block_causal_mask,
    loss_tokens,
)
from peft_arena.generation.loss import completion_loss
from peft_arena.generation.prompts import Example, PromptFormat, encode
from tests.support.generation import random_llama

EXAMPLES = [Example("the apple is red and the river", "red"),
            Example("a guitar", "blue"),
            Example("in the river of the apple that was on the guitar with his", "red")]


@pytest.fixture
def encoded(chat_tokenizer):
    return encode(EXAMPLES, PromptFormat("Text: {text}"), chat_tokenizer, 64)


def test_labels_mask_the_prompt_and_padding_by_position_not_by_pad_id(encoded, chat_tokenizer):
    pad = chat_tokenizer.pad_token_id
    assert pad == chat_tokenizer.eos_token_id  # as SmolLM2's
    batch = CompletionCollator(encoded.prompt_ids, encoded.completion_ids, pad)([0, 1])
    for row, i in enumerate([0, 1]):
        n_prompt, n_completion = len(encoded.prompt_ids[i]), len(encoded.completion_ids[i])
        labels = batch["labels"][row]
        assert (labels[:n_prompt] == IGNORE).all()
        # The completion's closing eos is also the pad id, and still carries a loss.
        assert labels[n_prompt:n_prompt + n_completion].tolist() == \
            encoded.completion_ids[i].tolist()
        assert labels[n_prompt + n_completion - 1] == pad
        assert (labels[n_prompt + n_completion:] == IGNORE).all()
        assert batch["attention_mask"][row].sum() == n_prompt + n_completion
    assert batch_sequences(batch) == 2
    assert batch_tokens(batch) == int(encoded.lengths[[0, 1]].sum())
    assert loss_tokens(batch) == sum(len(encoded.completion_ids[i]) for i in (0, 1))


def test_the_loss_is_the_mean_over_completion_tokens(encoded, chat_tokenizer):
    model = random_llama(chat_tokenizer).eval()
    collator = CompletionCollator(encoded.prompt_ids, encoded.completion_ids,
                                  chat_tokenizer.pad_token_id)
    batch = collator([0, 1, 2])
    # By hand: each example alone, the log-probability of every completion token given all
    # tokens before it.
    losses = []
    for prompt, completion in zip(encoded.prompt_ids, encoded.completion_ids, strict=True):
        ids = torch.as_tensor(np.concatenate([prompt, completion]))[None]
        with torch.no_grad():
            log_probs = model(input_ids=ids).logits[0].log_softmax(-1)
        for k, token in enumerate(completion):
            losses.append(-log_probs[len(prompt) + k - 1, token].item())
    with torch.no_grad():
        for prune in (False, True):
            loss = completion_loss(model, batch, prune_head=prune)
            assert loss.item() == pytest.approx(np.mean(losses), abs=1e-5)


def test_the_block_mask_keeps_attention_inside_each_example():
    mask = block_causal_mask([2, 3], torch.bool)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0],
                             [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    additive = block_causal_mask([2, 3], torch.float32)[0, 0]
    assert torch.equal(additive == 0, expected)
    assert (additive[~expected] == torch.finfo(torch.float32).min).all()


def _loss_and_grads(model, batch, prune: bool = True):
    model.zero_grad(set_to_none=True)
    loss = completion_loss(model, batch, prune_head=prune)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packing_is_exact(attention, encoded, chat_tokenizer):
    model = random_llama(chat_tokenizer, attention)
    model.train()
    model.config.use_cache = False
    pad = chat_tokenizer.pad_token_id
    mask_dtype = torch.bool if attention == "sdpa" else torch.float32
    padded = CompletionCollator(encoded.prompt_ids, encoded.completion_ids, pad)([0, 1, 2])
    packed = CompletionCollator(encoded.prompt_ids, encoded.completion_ids, pad, pack=True,
                                mask_dtype=mask_dtype)([0, 1, 2])
    assert packed["input_ids"].shape == (1, int(encoded.lengths.sum()))
    assert batch_sequences(packed) == 3 and batch_tokens(packed) == batch_tokens(padded)
    assert loss_tokens(packed) == loss_tokens(padded)
    torch.manual_seed(0)  # dropout is off in the tiny Llama; the seed guards a change there
    padded_loss, padded_grads = _loss_and_grads(model, padded)
    packed_loss, packed_grads = _loss_and_grads(model, packed)
    assert packed_loss.item() == pytest.approx(padded_loss.item(), abs=1e-6)
    assert padded_grads.keys() == packed_grads.keys() and len(padded_grads) > 10
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_packing_without_the_mask_would_not_be_exact(encoded, chat_tokenizer):
    """The check above can fail: attention across examples changes the loss."""
    model = random_llama(chat_tokenizer).eval()
    pad = chat_tokenizer.pad_token_id
    padded = CompletionCollator(encoded.prompt_ids, encoded.completion_ids, pad)([0, 1, 2])
    packed = CompletionCollator(encoded.prompt_ids, encoded.completion_ids, pad,
                                pack=True)([0, 1, 2])
    crossing = {**packed, "attention_mask": torch.ones_like(packed["input_ids"])}
    with torch.no_grad():
        assert abs(completion_loss(model, crossing).item()
                   - completion_loss(model, padded).item()) > 1e-3
