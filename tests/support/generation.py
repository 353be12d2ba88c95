"""Tiny random Llama causal LMs and their tokenizers for the generative path: a Llama-like
tokenizer (BOS, no chat template) and a SmolLM2-like one (chat template, eos = pad)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.support.synthetic import FILLER, KEYWORDS
from tests.support.tiny_decoders import BOS, EOS, decoder_model, train_tokenizer

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# SmolLM2's template, without its default system prompt.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LABELS = ["red", "blue"]


def _texts() -> list[str]:
    words = FILLER + KEYWORDS + LABELS + ["Topic:", "Answer:", "Classify", "the", "text",
                                          "system", "user", "assistant"]
    return [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4


def make_plain_tokenizer():
    """Llama-like: a BOS token starts every encoding, no pad token, no chat template."""
    tokenizer = train_tokenizer(_texts(), specials=(BOS, EOS))
    tokenizer.pad_token = EOS
    tokenizer.padding_side = "right"
    return tokenizer


def make_chat_tokenizer():
    """SmolLM2-like: a chat template, eos = pad = <|im_end|>, no BOS added."""
    tokenizer = train_tokenizer(_texts(), add_bos=False, specials=(IM_END, IM_START))
    tokenizer.eos_token = IM_END
    tokenizer.pad_token = IM_END
    tokenizer.bos_token = None
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def random_llama(tokenizer, attention: str = "sdpa") -> torch.nn.Module:
    model = decoder_model("llama", tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.set_attn_implementation(attention)
    return model


def write_keyword_task(data_dir: Path, name: str) -> Path:
    """A generative task file over the synthetic keyword rows in `data_dir/synth`: the answer
    is the row's keyword, written after a plain prompt."""
    path = data_dir / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nkind: generation\n"
        "train_file: synth/train.jsonl\ntest_file: synth/test.jsonl\n"
        f"labels: {json.dumps(KEYWORDS)}\n"
        "prompt: \"Text: {text}\\nKeyword:\"\n"
        "max_length: 40\n")
    return path
