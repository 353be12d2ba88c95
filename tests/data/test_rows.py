"""Bad rows in a user's files (cell/data.py's row checks): each stops the load in one line
that names the rows, or, with `on_bad_rows: drop`, is dropped and counted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import load_task_file
from peft_arena.data.loading import load_task_data
from tests.support.broken_data import BAD_ROWS, GOOD, csv, jsonl, task_with_train
from tests.support.synthetic import KEYWORDS


def _load(task: Path, **kwargs):
    return load_task_data(load_task_file(task), None, **kwargs)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_each_bad_row_stops_the_load_in_one_line(tmp_path, suffix, case):
    jsonl_line, csv_line, words = BAD_ROWS[case]
    line = jsonl_line if suffix == "jsonl" else csv_line
    if line is None:
        pytest.skip(f"CSV cannot write a {case} apart from an empty cell (tested as such)")
    good = jsonl(GOOD) if suffix == "jsonl" else csv(GOOD)
    # Bad rows at positions 4 and 62: the error names them, counting examples from 1.
    lines = good.splitlines(keepends=True)
    header = lines[:1] if suffix == "csv" else []
    body = lines[len(header):]
    text = "".join([*header, *body[:3], line + "\n", *body[3:], line + "\n"])
    with pytest.raises(UserError) as info:
        _load(task_with_train(tmp_path, suffix, text))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / f"train.{suffix}") + ": 2 rows cannot be used")
    assert re.search(f"{words} in 2 rows \\(4, 62\\)", message), message
    assert "on_bad_rows: drop" in message


def test_a_null_label_does_not_make_the_other_labels_floats(tmp_path):
    # pandas would read [0, null, 1] as [0.0, NaN, 1.0]: only the null row is bad.
    text = jsonl(GOOD) + '{"text": "river bank", "label": null}\n'
    with pytest.raises(UserError, match=r"^\S+: 1 row cannot be used: no label in 1 row \(61\)"):
        _load(task_with_train(tmp_path, "jsonl", text))


def test_parquet_gaps_are_bad_rows_and_keep_the_other_labels_integers(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"text": [r["text"] for r in GOOD] + [None, "apple"],
                          "label": pd.array([r["label"] for r in GOOD] + [0, None],
                                            dtype="Int64")})
    frame.to_parquet(tmp_path / "train.parquet")
    frame.iloc[:12].to_parquet(tmp_path / "test.parquet")
    (tmp_path / "t.yaml").write_text("name: t\ntrain_file: train.parquet\n"
                                     "test_file: test.parquet\n")
    with pytest.raises(UserError, match=r"empty or whitespace-only text in 1 row \(61\); "
                                        r"no label in 1 row \(62\)\."):
        _load(tmp_path / "t.yaml")
    data = _load(tmp_path / "t.yaml", on_bad_rows="drop", data_hygiene=True)
    assert data.label_names == ["0", "1", "2"]
    assert data.hygiene["dropped"]["train"] == {"empty_text": 1, "missing_label": 1}


def test_an_unknown_label_name_and_many_bad_rows_are_summarised(tmp_path):
    rows = [{"text": r["text"], "label": KEYWORDS[r["label"]]} for r in GOOD]
    bad = [{"text": f"row {i}", "label": "banana"} for i in range(7)]
    with pytest.raises(UserError) as info:
        _load(task_with_train(tmp_path, "jsonl", jsonl(bad + rows)))
    assert ("7 rows cannot be used: a label that is not among the task's label names, "
            "e.g. 'banana' in 7 rows (1, 2, 3, 4, 5, ...)") in str(info.value)


def test_an_empty_csv_label_no_longer_invents_a_class(tmp_path):
    # Without declared labels the names come from the data: "" must not become one of them.
    text = csv(GOOD).replace("text,label\n", "text,label\n\"river\",\n", 1)
    with pytest.raises(UserError, match="no label in 1 row"):
        _load(task_with_train(tmp_path, "csv", text, labels=None))
    data = _load(task_with_train(tmp_path, "csv", text, labels=None,
                                 settings="on_bad_rows: drop\n"))
    assert data.label_names == ["0", "1", "2"]


def test_on_bad_rows_drop_drops_and_counts_them(tmp_path):
    extra = ['{"text": "", "label": 0}', '{"text": "apple", "label": null}',
             '{"text": "apple", "label": 1.0}', '{"text": "apple", "label": 9}',
             '{"text": "  ", "label": null}']  # blank text and no label: counted once
    text = jsonl(GOOD) + "\n".join(extra) + "\n"
    task = task_with_train(tmp_path, "jsonl", text, settings="on_bad_rows: drop\n")
    data = _load(task, data_hygiene=True)
    assert len(data.train) + len(data.val) == len(GOOD)
    assert data.hygiene["dropped"] == {"train": {"empty_text": 2, "missing_label": 1,
                                             "float_label": 1, "label_out_of_range": 1},
                                   "test": {}}
    assert data.hygiene["on_bad_rows"] == "drop"
    # A run's setting overrides the task file's, both ways.
    with pytest.raises(UserError, match="5 rows cannot be used"):
        _load(task, on_bad_rows="error")
    plain = task_with_train(tmp_path, "jsonl", text)
    assert len(_load(plain, on_bad_rows="drop").train) == len(data.train)


def test_a_file_with_no_usable_row_is_refused_even_when_dropping(tmp_path):
    text = '{"text": "", "label": 0}\n{"text": "a", "label": null}\n'
    with pytest.raises(UserError, match="none of its 2 rows can be used"):
        _load(task_with_train(tmp_path, "jsonl", text, settings="on_bad_rows: drop\n"))


def test_bad_task_settings_fail_in_one_line(tmp_path):
    with pytest.raises(UserError, match="on_bad_rows must be one of error, drop, not 'skip'"):
        task_with_train(tmp_path, "jsonl", jsonl(GOOD), settings="on_bad_rows: skip\n")
        load_task_file(tmp_path / "t.yaml")
    with pytest.raises(UserError, match="drop_test_leaks must be true or false"):
        CellSpec(model="minilm", task="imdb", strategy="lora", drop_test_leaks="yes")
