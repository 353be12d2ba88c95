"""Shared fixtures: tiny random models built from a config, and a tiny learnable task.

Fixtures only: the helpers they use, and every helper tests share, live in tests/support/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Neither imports torch: the thread settings below must come first.
from tests.support.synthetic import KEYWORDS, synthetic_rows, write_builtin_tasks, write_jsonl
from tests.support.tiny_models import save_tiny_encoder

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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-roberta"), "roberta")


def _tiny_decoder(tmp_path_factory, arch: str) -> Path:
    from tests.support.tiny_decoders import save_tiny_decoder  # imports torch

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


# Tokenizers for the generative path (tests/support/generation.py): Llama-like and SmolLM2-like.
@pytest.fixture(scope="session")
def plain_tokenizer():
    from tests.support.generation import make_plain_tokenizer

    return make_plain_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    from tests.support.generation import make_chat_tokenizer

    return make_chat_tokenizer()


@pytest.fixture
def builtin_data(tmp_path) -> Path:
    """A --data-dir with small folders for the three built-in tasks (the retention probe
    set's sources): tests.support.synthetic.write_builtin_tasks."""
    return write_builtin_tasks(tmp_path)


@pytest.fixture(scope="session")
def tiny_bert_body(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT saved without its 3-class head (as base checkpoints are: keys without
    the `bert.` prefix), so that a cell can give it the head of any task."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert-body")
    BertForSequenceClassification.from_pretrained(tiny_bert).bert.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder
