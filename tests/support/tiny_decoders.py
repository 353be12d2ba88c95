"""Tiny random decoder checkpoints (Llama, Qwen2, Mistral, GPT-2) with tokenizers that have no
pad token, as users meet them: a base model saved as `...ForCausalLM` (so the classification
head is newly initialised when loaded) and a byte-level BPE tokenizer trained on a few hundred
texts, with beginning- and end-of-sequence tokens but no pad token.

    python -m tests.support.tiny_decoders /tmp/tiny-llama [--arch llama] [--texts FILE.jsonl ...]

writes one such folder (texts from the JSONL files' "text" field; synthetic ones otherwise).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from tests.support.synthetic import synthetic_rows

ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2")
BOS, EOS = "<s>", "</s>"
VOCAB_SIZE = 512


def train_tokenizer(texts: Iterable[str], *, add_bos: bool = True,
                    specials: tuple[str, ...] = (BOS, EOS)) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with `specials` and no pad token. With
    `add_bos`, every encoding starts with the first special token, as Llama's does."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    if add_bos and specials:
        bos_id = backend.token_to_id(specials[0])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{specials[0]} $A", special_tokens=[(specials[0], bos_id)])
    names = dict(zip(("bos_token", "eos_token"), specials, strict=False))
    if len(specials) == 1:  # one token ends (and, where asked, starts) every text
        names["eos_token"] = specials[0]
    return PreTrainedTokenizerFast(tokenizer_object=backend, **names)


def decoder_model(arch: str, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    """A two-layer random model of `arch` with no pad token id, seeded."""
    torch.manual_seed(0)
    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": None,
           # Wider than the 0.02 default so a frozen random base gives features that differ
           # between inputs; otherwise only full fine-tuning could learn.
           "initializer_range": 0.2}
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                          **ids))
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 256, **ids}
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                                 "mistral": (MistralConfig, MistralForCausalLM)}[arch]
    return model_class(config_class(**shape))


def synthetic_texts(n: int = 400) -> list[str]:
    return [row["text"] for row in synthetic_rows(n, seed=11)]


def save_tiny_decoder(folder: Path, arch: str, texts: Iterable[str] | None = None) -> Path:
    # GPT-2's and Qwen's tokenizers add nothing to an encoding; Llama's and Mistral's start
    # with a BOS token. Qwen's end-of-text token doubles as its BOS.
    specials = ("<|endoftext|>", "<|endoftext|>") if arch == "qwen2" else (BOS, EOS)
    tokenizer = train_tokenizer(texts if texts is not None else synthetic_texts(),
                                add_bos=arch not in ("gpt2", "qwen2"),
                                specials=tuple(dict.fromkeys(specials)))
    if arch == "qwen2":
        tokenizer.bos_token = None
    folder.mkdir(parents=True, exist_ok=True)
    decoder_model(arch, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # transformers picks Qwen2Tokenizer for a qwen2 folder, whose defaults would add a pad
    # and an unknown token; say that there are none.
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(pad_token=None, unk_token=None)
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def _read_texts(files: list[Path], limit: int) -> list[str]:
    texts: list[str] = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and len(texts) < limit:
                texts.append(json.loads(line)["text"])
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--arch", choices=ARCHITECTURES, default="llama")
    parser.add_argument("--texts", type=Path, nargs="*", default=[],
                        help="JSONL files with a 'text' field to train the tokenizer on")
    parser.add_argument("--max-texts", type=int, default=2000)
    args = parser.parse_args()
    texts = _read_texts(args.texts, args.max_texts) if args.texts else None
    print(save_tiny_decoder(args.folder, args.arch, texts))


if __name__ == "__main__":
    main()
