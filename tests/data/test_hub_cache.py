"""The Hub loading path, offline: a built-in task and a model named by Hub id, found in a
Hugging Face cache laid out as `hf download` leaves it, run through `peft-arena run` with no
--data-dir (so `datasets.load_dataset` and `from_pretrained` get the Hub ids).

The cache is built from synthetic files: a tiny random BERT, and AG News-shaped parquet files
written by `datasets` itself (so their schema carries the ClassLabel names, as the Hub's do)
in the layout of the repository's parquet files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hub_cache import add_folder

MODEL_ID = "peft-arena-test/tiny-bert"
AGNEWS = ["World", "Sports", "Business", "Sci/Tech"]  # as builtin_tasks/agnews.yaml says
KEYWORDS = ["election", "football", "market", "software"]


def _rows(n: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    filler = ["the", "a", "of", "to", "and", "in", "is", "it", "on", "with"]
    texts, labels = [], []
    for i in range(n):
        words = rng.choices(filler, k=6)
        words.insert(rng.randrange(7), KEYWORDS[i % 4])
        texts.append(" ".join(words))
        labels.append(i % 4)
    return {"text": texts, "label": labels}


def _agnews_repository(folder: Path, text_column: str = "text") -> Path:
    import datasets

    features = datasets.Features({text_column: datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=AGNEWS)})
    for split, n, seed in (("train", 80, 1), ("test", 20, 2)):
        rows = _rows(n, seed)
        rows[text_column] = rows.pop("text")
        path = folder / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        "  - split: train\n    path: data/train-*\n  - split: test\n    path: data/test-*\n---\n")
    return folder


@pytest.fixture(scope="module")
def hub_model(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT as a base checkpoint (no classification head), as most Hub models are."""
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-base")
    BertModel.from_pretrained(tiny_bert).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    cache = tmp_path_factory.mktemp("hf-models")
    add_folder(cache, "model", MODEL_ID, folder)
    return cache


def _hub_cache_with(hub_model: Path, tmp_path: Path, text_column: str) -> Path:
    cache = tmp_path / "hub"
    shutil.copytree(hub_model, cache, symlinks=True)
    add_folder(cache, "dataset", "fancyzhx/ag_news",
               _agnews_repository(tmp_path / "repo", text_column))
    return cache


def _run_offline(cache: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    home = tmp_path / "hf-home"  # HF_HOME: datasets' own cache goes under it, empty at start
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home),
           "HF_HUB_CACHE": str(cache), "PEFT_ARENA_QUIET": "1"}
    env.pop("PEFT_ARENA_DATA_DIR", None)
    env.pop("HF_DATASETS_CACHE", None)
    return subprocess.run(
        [sys.executable, "-m", "peft_arena", "run", "--matrix", "agnews", "--model", MODEL_ID,
         "--strategies", "lora", "--max-train-samples", "40", "--max-eval-samples", "12",
         "--epochs", "1", "--results", str(tmp_path / "results")],
        capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow  # a cell in its own process: about 20 s on 2 busy cores
def test_a_builtin_task_and_a_hub_model_load_from_the_hub_cache_offline(hub_model, tmp_path):
    cache = _hub_cache_with(hub_model, tmp_path, "text")
    done = _run_offline(cache, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [record_file] = (tmp_path / "results" / "records").glob("agnews__lora__*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "ok"
    assert record["resolved"]["model_path"] == MODEL_ID
    assert record["resolved"]["label_names"] == AGNEWS
    # 40 training examples drawn from the 80 in the cache, 12 test from its 20.
    assert record["resolved"]["train_examples"] == 40
    assert record["resolved"]["test_examples"] == 12


@pytest.mark.slow
def test_hub_columns_that_differ_from_the_task_file_are_a_one_line_error(hub_model, tmp_path):
    cache = _hub_cache_with(hub_model, tmp_path, "content")  # agnews.yaml says `text`
    done = _run_offline(cache, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: fancyzhx/ag_news (train): no column 'text' (found: ")
    assert "content" in errors[0] and "text_column" in errors[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_hub_split_missing_from_the_data_set_is_a_one_line_error(monkeypatch):
    import datasets

    from peft_arena.common.errors import UserError
    from peft_arena.config.tasks import resolve_task
    from peft_arena.data import loading as data

    only_train = datasets.DatasetDict({"train": datasets.Dataset.from_dict(_rows(8, 0))})
    monkeypatch.setattr(data, "_hub_dataset", lambda task: only_train)
    with pytest.raises(UserError, match=r"fancyzhx/ag_news: no split 'test' \(found: train\)"):
        data.load_task_data(resolve_task("agnews"), None)


def test_a_data_set_only_in_the_hub_cache_loads_offline_in_process(tmp_path, monkeypatch):
    """The same fallback as the CLI test above, in this process and in seconds: datasets has
    no prepared copy, so the snapshot is found in the Hub cache and loaded from its folder."""
    import datasets
    import huggingface_hub

    from peft_arena.config.tasks import resolve_task
    from peft_arena.data.loading import load_task_data

    assert datasets.config.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1 before imports
    cache = tmp_path / "hub"
    add_folder(cache, "dataset", "fancyzhx/ag_news", _agnews_repository(tmp_path / "repo"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    data = load_task_data(resolve_task("agnews"), None, max_train_samples=40,
                          max_eval_samples=12)
    assert data.label_names == AGNEWS
    assert (len(data.train), len(data.test)) == (40, 12)
    expected = _rows(80, 1)
    by_text = dict(zip(expected["text"], expected["label"], strict=True))
    assert all(by_text[text] == label for text, label in zip(data.train.texts,
                                                             data.train.labels, strict=True))
