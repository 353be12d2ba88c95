"""Bad rows in a user's data, the settings that drop them, and the data-hygiene counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from peft_arena import api
from peft_arena.cell import hygiene
from peft_arena.cell.batching import tokenize
from peft_arena.cell.data import load_cell_data, load_task_data
from peft_arena.cell.modeling import load_tokenizer
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import load_task_file
from peft_arena.errors import UserError
from peft_arena.matrix.plan import unknown_setting_message
from peft_arena.strategies import load_strategies
from tests.support.paths import COMMITTED_RECORDS, SHARED_DATA
from tests.support.records import make_record
from tests.support.synthetic import KEYWORDS, synthetic_rows

GOOD = synthetic_rows(60, seed=3)


def _task(tmp_path: Path, suffix: str, train: str, *, settings: str = "",
          labels: list[str] | None = KEYWORDS) -> Path:
    """A user task whose train file is `train` (raw text) and whose test file is clean."""
    (tmp_path / f"train.{suffix}").write_text(train, encoding="utf-8")
    (tmp_path / f"test.{suffix}").write_text(_csv(GOOD[:12]) if suffix == "csv"
                                             else _jsonl(GOOD[:12]), encoding="utf-8")
    task = tmp_path / "t.yaml"
    task.write_text(f"name: t\ntrain_file: train.{suffix}\ntest_file: test.{suffix}\n"
                    + (f"labels: {json.dumps(labels)}\n" if labels else "") + settings)
    return task


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _csv(rows: list[dict]) -> str:
    return "text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in rows)


def _load(task: Path, **kwargs):
    return load_task_data(load_task_file(task), None, **kwargs)


# Each bad input, as a JSONL line and as a CSV line, with the words its error must contain.
BAD_ROWS = {
    "null label": ('{"text": "apple pie", "label": null}', None, "no label"),
    "no label key": ('{"text": "apple pie"}', None, "no label"),
    "empty label": ('{"text": "apple pie", "label": ""}', '"apple pie",', "no label"),
    "empty text": ('{"text": "", "label": 0}', ",0", "empty or whitespace-only text"),
    "blank text": ('{"text": " \\t ", "label": 0}', '"   ",0', "empty or whitespace-only text"),
    "null text": ('{"text": null, "label": 0}', None, "empty or whitespace-only text"),
    "float label": ('{"text": "apple pie", "label": 1.0}', '"apple pie",1.0',
                    "a float label where integer ids are expected, e.g. '?1.0'?"),
    "label out of range": ('{"text": "apple pie", "label": 3}', '"apple pie",3',
                           "a label id outside 0..2, e.g. '?3'?"),
}


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_each_bad_row_stops_the_load_in_one_line(tmp_path, suffix, case):
    jsonl_line, csv_line, words = BAD_ROWS[case]
    line = jsonl_line if suffix == "jsonl" else csv_line
    if line is None:
        pytest.skip(f"CSV cannot write a {case} apart from an empty cell (tested as such)")
    good = _jsonl(GOOD) if suffix == "jsonl" else _csv(GOOD)
    # Bad rows at positions 4 and 62: the error names them, counting examples from 1.
    lines = good.splitlines(keepends=True)
    header = lines[:1] if suffix == "csv" else []
    body = lines[len(header):]
    text = "".join([*header, *body[:3], line + "\n", *body[3:], line + "\n"])
    with pytest.raises(UserError) as info:
        _load(_task(tmp_path, suffix, text))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / f"train.{suffix}") + ": 2 rows cannot be used")
    assert re.search(f"{words} in 2 rows \\(4, 62\\)", message), message
    assert "on_bad_rows: drop" in message


def test_a_null_label_does_not_make_the_other_labels_floats(tmp_path):
    # pandas would read [0, null, 1] as [0.0, NaN, 1.0]: only the null row is bad.
    text = _jsonl(GOOD) + '{"text": "river bank", "label": null}\n'
    with pytest.raises(UserError, match=r"^\S+: 1 row cannot be used: no label in 1 row \(61\)"):
        _load(_task(tmp_path, "jsonl", text))


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
        _load(_task(tmp_path, "jsonl", _jsonl(bad + rows)))
    assert ("7 rows cannot be used: a label that is not among the task's label names, "
            "e.g. 'banana' in 7 rows (1, 2, 3, 4, 5, ...)") in str(info.value)


def test_an_empty_csv_label_no_longer_invents_a_class(tmp_path):
    # Without declared labels the names come from the data: "" must not become one of them.
    text = _csv(GOOD).replace("text,label\n", "text,label\n\"river\",\n", 1)
    with pytest.raises(UserError, match="no label in 1 row"):
        _load(_task(tmp_path, "csv", text, labels=None))
    data = _load(_task(tmp_path, "csv", text, labels=None, settings="on_bad_rows: drop\n"))
    assert data.label_names == ["0", "1", "2"]


def test_on_bad_rows_drop_drops_and_counts_them(tmp_path):
    extra = ['{"text": "", "label": 0}', '{"text": "apple", "label": null}',
             '{"text": "apple", "label": 1.0}', '{"text": "apple", "label": 9}',
             '{"text": "  ", "label": null}']  # blank text and no label: counted once
    text = _jsonl(GOOD) + "\n".join(extra) + "\n"
    task = _task(tmp_path, "jsonl", text, settings="on_bad_rows: drop\n")
    data = _load(task, data_hygiene=True)
    assert len(data.train) + len(data.val) == len(GOOD)
    assert data.hygiene["dropped"] == {"train": {"empty_text": 2, "missing_label": 1,
                                             "float_label": 1, "label_out_of_range": 1},
                                   "test": {}}
    assert data.hygiene["on_bad_rows"] == "drop"
    # A run's setting overrides the task file's, both ways.
    with pytest.raises(UserError, match="5 rows cannot be used"):
        _load(task, on_bad_rows="error")
    plain = _task(tmp_path, "jsonl", text)
    assert len(_load(plain, on_bad_rows="drop").train) == len(data.train)


def test_a_file_with_no_usable_row_is_refused_even_when_dropping(tmp_path):
    text = '{"text": "", "label": 0}\n{"text": "a", "label": null}\n'
    with pytest.raises(UserError, match="none of its 2 rows can be used"):
        _load(_task(tmp_path, "jsonl", text, settings="on_bad_rows: drop\n"))


def test_bad_task_settings_fail_in_one_line(tmp_path):
    with pytest.raises(UserError, match="on_bad_rows must be one of error, drop, not 'skip'"):
        _task(tmp_path, "jsonl", _jsonl(GOOD), settings="on_bad_rows: skip\n")
        load_task_file(tmp_path / "t.yaml")
    with pytest.raises(UserError, match="drop_test_leaks must be true or false"):
        CellSpec(model="minilm", task="imdb", strategy="lora", drop_test_leaks="yes")


# --- hygiene counts ---------------------------------------------------------------------------

# Train: 8 distinct texts, one present three times (two duplicates, one of them differing in
# whitespace only) and one twice. Test: 4 rows, 2 with a training text (one after whitespace
# normalisation), and one duplicate of another test row.
TRAIN = ["apple one", "apple  one", " apple one\n", "river two", "river two", "guitar three",
         "apple four", "river five", "guitar six", "apple seven", "guitar eight"]
TEST = ["river\ttwo", "guitar three", "apple new", "apple new"]


def _fixture_task(tmp_path: Path, settings: str = "") -> Path:
    train = [{"text": t, "label": KEYWORDS.index(t.split()[0])} for t in TRAIN]
    test = [{"text": t, "label": KEYWORDS.index(t.split()[0])} for t in TEST]
    (tmp_path / "train.jsonl").write_text(_jsonl(train))
    (tmp_path / "test.jsonl").write_text(_jsonl(test))
    task = tmp_path / "t.yaml"
    task.write_text("name: t\ntrain_file: train.jsonl\ntest_file: test.jsonl\n"
                    f"labels: {json.dumps(KEYWORDS)}\n" + settings)
    return task


def test_hygiene_counts_on_known_duplicates_and_leaks(tmp_path):
    data = _load(_fixture_task(tmp_path), val_fraction=0.3, seed=0, data_hygiene=True)
    section = data.hygiene
    assert section["full"] == {"train": {"rows": 11, "duplicates": 3},
                               "test": {"rows": 4, "duplicates": 1, "in_train": 2}}
    assert section["test_leaks_into_train"] is True
    assert (section["on_bad_rows"], section["drop_test_leaks"]) == ("error", False)
    assert section["dropped"] == {"train": {}, "test": {}}
    # The rows used: counted on the split the cell got, against the training rows it got.
    used = section["used"]
    assert [used[s]["rows"] for s in ("train", "val", "test")] == [
        len(data.train), len(data.val), len(data.test)]
    norm = [hygiene.normalise(t) for t in data.train.texts]
    assert used["train"]["duplicates"] == len(norm) - len(set(norm))
    expected_val = sum(hygiene.normalise(t) in set(norm) for t in data.val.texts)
    assert used["val"]["in_train"] == expected_val
    assert used["test"]["in_train"] == sum(hygiene.normalise(t) in set(norm) for t in TEST)
    assert json.loads(json.dumps(section)) == section  # a record is JSON


def test_validation_rows_are_counted_on_text_not_on_row(tmp_path):
    # Two copies of each text: the carve puts some copies in validation and the rest in train.
    texts = [f"{KEYWORDS[i % 3]} {i}" for i in range(30)] * 2
    counts = hygiene.split_counts({"train": texts[:45], "val": texts[45:], "test": []})
    assert counts["val"] == {"rows": 15, "duplicates": 0, "in_train": 15}
    assert counts["train"]["duplicates"] == 15


def test_drop_test_leaks_drops_them_and_says_so(tmp_path):
    data = _load(_fixture_task(tmp_path, "drop_test_leaks: true\n"), val_fraction=0.3,
                 data_hygiene=True)
    assert data.test.texts == ["apple new", "apple new"]
    section = data.hygiene
    assert section["dropped"]["test"] == {"in_train": 2}
    assert section["full"]["test"]["in_train"] == 2  # the files as they are
    assert section["used"]["test"] == {"rows": 2, "duplicates": 1, "in_train": 0}
    assert section["drop_test_leaks"] is True and section["test_leaks_into_train"] is False


def test_settings_off_leave_the_examples_unchanged(tmp_path, data_dir, synth_task):
    task = load_task_file(synth_task)
    kwargs = {"val_fraction": 0.1, "max_train_samples": 90, "max_eval_samples": 30, "seed": 0}
    plain = load_task_data(task, None, **kwargs)
    # The synthetic data has no bad rows and repeats texts across splits only by chance.
    dropped = load_task_data(task, None, on_bad_rows="drop", **kwargs)
    assert (dropped.train.texts, dropped.val.texts, dropped.test.texts) == (
        plain.train.texts, plain.val.texts, plain.test.texts)


def test_settings_change_a_cell_identity_only_when_they_change_something():
    plain = api.plan_cells(tasks=["imdb"], strategies=["lora"])[0]
    spelled_out = api.plan_cells(tasks=["imdb"], strategies=["lora"],
                                 sets=["on_bad_rows=error", "drop_test_leaks=false"])[0]
    assert spelled_out.cell_id == plain.cell_id
    dropping = api.plan_cells(tasks=["imdb"], strategies=["lora"],
                              sets=["drop_test_leaks=true"])[0]
    assert dropping.drop_test_leaks is True and dropping.cell_id != plain.cell_id


def test_a_task_file_setting_reaches_the_cell(tmp_path):
    task = _fixture_task(tmp_path, "drop_test_leaks: true\n")
    [cell] = api.plan_cells(tasks=[str(task)], strategies=["lora"])
    assert cell.drop_test_leaks is True
    [back] = api.plan_cells(tasks=[str(task)], strategies=["lora"],
                            sets=["drop_test_leaks=false"])
    assert back.drop_test_leaks is False  # the run overrides the file's setting


def test_committed_records_keep_their_identity():
    records = sorted(COMMITTED_RECORDS.glob("*.json"))
    if not records:
        pytest.skip("no committed records in results/records")
    for path in records:
        record = json.loads(path.read_text())
        assert CellSpec.from_dict(record["spec"]).cell_id == record["cell_id"], path.name


# --- unknown settings -------------------------------------------------------------------------


@pytest.mark.parametrize("sets, guess", [
    (["rank=4"], "r"), (["lora.rank=4"], "r"), (["lr=1e-3"], "learning_rate"),
    (["learning_rte=1e-3"], "learning_rate"), (["lora.alpha=8"], "lora_alpha"),
])
def test_unknown_setting_suggests_the_likely_one(sets, guess):
    with pytest.raises(UserError, match=f"Did you mean '{guess}'") as info:
        api.plan_cells(tasks=["imdb"], strategies=["lora"], sets=sets)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert "for lora: r, lora_alpha, lora_dropout, target_modules" in message
    assert "megatron_config" not in message  # not every field of LoraConfig


def test_unknown_setting_without_a_likely_one():
    message = unknown_setting_message("bogus", "--set", [load_strategies().get("full")])
    assert "Did you mean" not in message and "Common settings: learning_rate" in message


# --- the examples of existing records ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow  # re-tokenizes the real data of every committed record
@pytest.mark.skipif(not (SHARED_DATA / "imdb").is_dir(),
                    reason=f"real data not found at {SHARED_DATA} "
                           "(set PEFT_ARENA_SHARED_DATA to its folder)")
def test_committed_records_still_get_the_same_examples():
    """The data fingerprint (token ids and labels of every split) of each committed record,
    recomputed with today's loader: the checks and hygiene counts change no example."""
    records = [json.loads(p.read_text()) for p in
               sorted(COMMITTED_RECORDS.glob("*.json"))]
    records = [r for r in records if (r.get("resolved") or {}).get("data_fingerprint")]
    if not records:
        pytest.skip("no committed records with a data fingerprint in results/records")
    checked = {}
    for record in records:
        spec = CellSpec.from_dict(record["spec"])
        key = (spec.task, spec.model, spec.max_length, spec.max_train_samples,
               spec.max_eval_samples, spec.val_fraction, spec.data_seed)
        if key not in checked:
            data = load_cell_data(spec, SHARED_DATA)
            tokenizer = load_tokenizer(spec.model)
            checked[key] = {name: tokenize(split.texts, split.labels, tokenizer,
                                           spec.max_length)[0].fingerprint()
                            for name, split in (("train", data.train), ("val", data.val),
                                                ("test", data.test))}
        assert checked[key] == record["resolved"]["data_fingerprint"], record["cell_id"]


# --- the leaderboard --------------------------------------------------------------------------


def _hygiene(leaked: int, used_train: int, dropped_leaks: bool = False) -> dict:
    return {
        "text_match": hygiene.TEXT_MATCH, "on_bad_rows": "drop", "drop_test_leaks": dropped_leaks,
        "dropped": {"train": {"empty_text": 3, "missing_label": 1},
                    "test": {"in_train": leaked} if dropped_leaks else {}},
        "full": {"train": {"rows": 25000, "duplicates": 96},
                 "test": {"rows": 25000, "duplicates": 199, "in_train": leaked}},
        "used": {"train": {"rows": used_train, "duplicates": 0},
                 "val": {"rows": 23, "duplicates": 0, "in_train": 1},
                 "test": {"rows": 100, "duplicates": 0, "in_train": 0}},
        "test_leaks_into_train": leaked > 0 and not dropped_leaks,
    }


def _board(tmp_path: Path, records: list[dict]) -> str:
    from peft_arena.records import store
    from peft_arena.report import build

    for record in records:
        store.write_record(store.record_path(tmp_path, record["cell_id"]), record)
    return build.build_report(tmp_path, chart_links=False).paths[0].read_text()


def test_leaderboard_shows_hygiene_per_task_and_flags_a_leaking_test_split(tmp_path):
    imdb = [make_record("imdb", s, 0, 0.85) for s in ("lora", "full")]
    imdb[0]["data_hygiene"] = _hygiene(123, 200)
    imdb[1]["data_hygiene"] = _hygiene(123, 400)
    agnews = make_record("agnews", "lora", 0, 0.9)
    agnews["data_hygiene"] = _hygiene(0, 200)
    old = make_record("agnews", "ia3", 0, 0.8)  # a record from before the section existed
    board = _board(tmp_path, [*imdb, agnews, old])
    imdb_table, agnews_table = board.split("## imdb")[1], board.split("## imdb")[0]
    assert "⚠ **Test split leaks into train**: 123 of 25,000 test rows (0.49%)" in (
        imdb_table.split("## ")[0])
    assert "Test split leaks" not in agnews_table
    details = board.split("### imdb")[1]
    assert "| full | test | 25,000 | 199 | 123 | 0 |" in details
    assert "| full | train | 25,000 | 96 | — | 4 (empty_text 3, missing_label 1) |" in details
    # Cells that used different rows are listed apart.
    assert "| used (full) | train | 400 | 0 | — | — |" in details
    assert "| used (lora) | val | 23 | 0 | 1 | — |" in details


def test_dropped_leaks_are_not_flagged(tmp_path):
    record = make_record("imdb", "lora", 0, 0.85)
    record["data_hygiene"] = _hygiene(123, 200, dropped_leaks=True)
    board = _board(tmp_path, [record])
    assert "Test split leaks" not in board
    assert "| full | test | 25,000 | 199 | 123 | 123 (in_train 123) |" in board
