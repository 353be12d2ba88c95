"""The LM head computed at label positions only: the full head's loss and gradients."""

from __future__ import annotations

import pytest
import torch
from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model

from peft_arena.generation.collate import CompletionCollator
from peft_arena.generation.loss import completion_loss, head_at, output_embeddings
from peft_arena.generation.prompts import Example, PromptFormat, encode
from tests.support.generation import random_llama

EXAMPLES = [Example("the apple is red and the river", "red"),
            Example("a guitar of the", "blue"),
            Example("in the river of the apple that was on the guitar with his", "red")]


def _wrapped(kind: str, model: torch.nn.Module) -> torch.nn.Module:
    if kind == "full":
        return model
    config = {"lora": LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear"),
              "ia3": IA3Config(task_type="CAUSAL_LM"),
              "prompt_tuning": PromptTuningConfig(task_type="CAUSAL_LM",
                                                  num_virtual_tokens=3)}[kind]
    wrapped = get_peft_model(model, config)
    # Adapters start as the identity (LoRA's B = 0): move them so their gradients are
    # not all zero by construction.
    with torch.no_grad():
        for parameter in wrapped.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return wrapped


@pytest.mark.parametrize("kind", ["full", "lora", "ia3", "prompt_tuning"])
def test_the_pruned_head_gives_the_full_heads_loss_and_gradients(kind, chat_tokenizer):
    torch.manual_seed(0)
    model = _wrapped(kind, random_llama(chat_tokenizer))
    model.train()
    encoded = encode(EXAMPLES, PromptFormat("Text: {text}"), chat_tokenizer, 64)
    batch = CompletionCollator(encoded.prompt_ids, encoded.completion_ids,
                               chat_tokenizer.pad_token_id)([0, 1, 2])
    results = []
    for prune in (False, True):
        model.zero_grad(set_to_none=True)
        loss = completion_loss(model, batch, prune_head=prune)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                                      if p.grad is not None}))
    (full_loss, full_grads), (pruned_loss, pruned_grads) = results
    assert pruned_loss == pytest.approx(full_loss, abs=1e-6)
    assert full_grads and full_grads.keys() == pruned_grads.keys()
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(pruned_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_the_head_sees_only_the_label_positions(chat_tokenizer):
    model = random_llama(chat_tokenizer).eval()
    seen = []
    output_embeddings(model).register_forward_hook(lambda _m, args, _o: seen.append(args[0]
                                                                                    .shape))
    ids = torch.arange(10)[None].repeat(2, 1)
    rows, columns = torch.tensor([0, 1, 1]), torch.tensor([4, 2, 7])
    with torch.no_grad(), head_at(model, rows, columns, 10):
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 3, model.config.vocab_size)
    assert seen == [torch.Size([1, 3, model.config.hidden_size])]
    with torch.no_grad():  # the hook is gone after the block
        assert model(input_ids=ids).logits.shape == (2, 10, model.config.vocab_size)
