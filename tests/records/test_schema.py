"""The record has one owner: what the runner, the search and a failure write is what
records.schema declares, and the records already committed still read."""

from __future__ import annotations

import typing

import pytest

from peft_arena.cell.entry import run_cell, train_cell
from peft_arena.records import builders, schema, store
from tests.support.paths import REPO
from tests.support.records import undeclared
from tests.support.specs import tiny_spec


@pytest.fixture(scope="module")
def trained(tiny_bert, synth_task):
    spec = tiny_spec(tiny_bert, synth_task, peft={"r": 4, "lora_alpha": 8})
    return spec, run_cell(spec), train_cell(spec)


def test_an_ok_record_holds_every_section_and_nothingundeclared(trained):
    spec, record, _ = trained
    assert record["status"] == "ok" and record["cell_id"] == spec.cell_id
    assert undeclared(record) == []
    # run_id: the matrix adds it; generation: generative cells only.
    assert set(typing.get_type_hints(schema.Record)) - set(record) == {"run_id", "generation"}
    assert record["task_kind"] == "classification"
    assert set(record["metrics"]) == set(typing.get_type_hints(schema.Metrics)) - {
        "invalid_share", "zero_shot", "exact_match", "chrf"}


def test_a_search_trial_trains_but_never_tests(trained):
    _, record, outcome = trained
    assert "eval_s" not in outcome.phases and "measure_s" not in outcome.phases
    partial = outcome.record()
    assert partial["status"] == "partial" and undeclared(partial) == []
    assert set(partial["metrics"]) == {"val_accuracy", "val_macro_f1"}
    assert "predictions" not in partial
    # The same seed trains the same weights whichever entry point ran it.
    assert partial["history"] == record["history"]
    assert outcome.val_accuracy == record["metrics"]["val_accuracy"]
    assert (outcome.trainable, outcome.total) == (record["params"]["trainable"],
                                                   record["params"]["total"])


def test_a_failed_record_has_no_score(trained):
    spec, _, _ = trained
    try:
        raise MemoryError("out of memory")
    except MemoryError as exc:
        error = builders.error_section(exc, "train")
    record = builders.failed_record(spec, error, memory={"peak_bytes": None, "source": None},
                                    environment={"precision": "fp32"}, run_id="run-1")
    assert undeclared(record) == []
    assert (record["status"], record["metrics"], record["predictions"]) == ("failed", {}, None)
    assert record["error"]["type"] == "MemoryError" and "MemoryError" in record["error"][
        "traceback"]
    record["metrics"]["accuracy"] = 1.0  # sections are the record's own, never shared
    assert record["params"] == {} and record["time"] == {}


def test_committed_records_still_read_and_fit_the_schema():
    records = list(store.iter_records(REPO / "results"))
    assert len(records) >= 15
    for record in records:
        assert record["schema_version"] <= schema.SCHEMA_VERSION
        assert undeclared(record) == [], record["cell_id"]
