"""Loading, checking and splitting task data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from peft_arena.common.errors import UserError
from peft_arena.config.tasks import load_task_file, resolve_task
from peft_arena.data.loading import load_task_data
from tests.support.synthetic import KEYWORDS, synthetic_rows, write_jsonl


def _task_dir(tmp_path, train_rows, test_rows=None, labels=KEYWORDS):
    folder = tmp_path / "synth"
    folder.mkdir(exist_ok=True)
    write_jsonl(folder / "train.jsonl", train_rows)
    write_jsonl(folder / "test.jsonl", test_rows or synthetic_rows(30, seed=9))
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps(labels))
    return tmp_path


def _synth_task(tmp_path):
    path = tmp_path / "synth.yaml"
    path.write_text("name: synth\nhub: {path: nobody/synth}\n")
    return load_task_file(path)


def test_validation_is_carved_from_train_and_subsets_are_stratified(data_dir, synth_task):
    task = load_task_file(synth_task)
    data = load_task_data(task, None, val_fraction=0.1, max_train_samples=90,
                          max_eval_samples=30, seed=0)
    assert len(data.train) == 90
    assert len(data.val) == 10
    assert len(data.test) == 30
    assert set(data.train.texts).isdisjoint(data.val.texts)
    counts = np.bincount(data.train.labels, minlength=3)
    assert counts.max() - counts.min() <= 1  # stratified: the classes stay balanced
    again = load_task_data(task, None, val_fraction=0.1, max_train_samples=90,
                           max_eval_samples=30, seed=0)
    assert again.train.texts == data.train.texts  # seeded
    other = load_task_data(task, None, val_fraction=0.1, max_train_samples=90,
                           max_eval_samples=30, seed=1)
    assert other.train.texts != data.train.texts


def test_data_dir_layout(data_dir, tmp_path):
    task = _synth_task(tmp_path)
    data = load_task_data(task, data_dir)
    assert data.label_names == KEYWORDS
    assert len(data.train) + len(data.val) == 960


def test_csv_with_string_labels(tmp_path):
    rows = synthetic_rows(60, seed=4)
    lines = ["body,queue"] + [f"\"{r['text']}\",{KEYWORDS[r['label']]}" for r in rows]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(lines[:20]) + "\n")
    (tmp_path / "t.yaml").write_text("name: tickets\ntrain_file: train.csv\ntest_file: test.csv\n"
                                     "text_column: body\nlabel_column: queue\n")
    data = load_task_data(load_task_file(tmp_path / "t.yaml"), None)
    assert data.label_names == sorted(KEYWORDS)
    index = {name: i for i, name in enumerate(data.label_names)}
    assert all(index[KEYWORDS[r["label"]]] in set(data.train.labels) for r in rows[:3])


@pytest.mark.parametrize("problem, message", [
    ("missing", "No train file"),
    ("empty", "is empty"),
    ("not_utf8", "not valid UTF-8"),
    ("no_column", "no column 'text'"),
    ("label_range", r"label id outside 0..2, e.g. 7 in 1 row \(61\)"),
    ("class_missing", "has no training example"),
])
def test_bad_data_fails_in_one_line(tmp_path, problem, message):
    folder = tmp_path / "synth"
    folder.mkdir()
    rows = synthetic_rows(60, seed=5)
    write_jsonl(folder / "test.jsonl", rows[:10])
    (folder / "labels.json").write_text(json.dumps(KEYWORDS))
    train = folder / "train.jsonl"
    if problem == "empty":
        train.write_text("")
    elif problem == "not_utf8":
        train.write_bytes(b'{"text": "caf\xe9", "label": 0}\n')
    elif problem == "no_column":
        write_jsonl(train, [{"body": r["text"], "label": r["label"]} for r in rows])
    elif problem == "label_range":
        write_jsonl(train, [*rows, {"text": "x", "label": 7}])
    elif problem == "class_missing":
        write_jsonl(train, [r for r in rows if r["label"] != 2])
    with pytest.raises(UserError, match=message) as info:
        load_task_data(_synth_task(tmp_path), tmp_path)
    assert "\n" not in str(info.value)


def test_builtin_tasks_are_data():
    banking = resolve_task("banking77")
    assert len(banking.labels) == 77
    assert banking.hub.revision == "refs/convert/parquet"
    assert resolve_task("agnews").labels == ("World", "Sports", "Business", "Sci/Tech")


@pytest.mark.parametrize("wanted", [20, 47, 90, 700])
def test_max_train_samples_is_exactly_the_training_size(synth_task, wanted):
    # 20 and 47 are sizes where 10% of the pool rounds down and would leave one extra.
    data = load_task_data(load_task_file(synth_task), None, val_fraction=0.1,
                          max_train_samples=wanted, seed=0)
    assert len(data.train) == wanted
    assert len(data.val) >= round(0.1 * wanted / 0.9)
