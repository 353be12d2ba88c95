"""The data-hygiene counts (duplicates, test rows found in train), the settings that drop
leaks, and the examples committed records were trained on. (Bad rows: test_rows.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_arena import api
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import load_task_file
from peft_arena.data import hygiene
from peft_arena.data.batching import tokenize
from peft_arena.data.loading import load_cell_data, load_task_data
from peft_arena.model.loading import load_tokenizer
from tests.support.broken_data import jsonl
from tests.support.paths import COMMITTED_RECORDS, SHARED_DATA
from tests.support.synthetic import KEYWORDS


def _load(task: Path, **kwargs):
    return load_task_data(load_task_file(task), None, **kwargs)


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
    (tmp_path / "train.jsonl").write_text(jsonl(train))
    (tmp_path / "test.jsonl").write_text(jsonl(test))
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
