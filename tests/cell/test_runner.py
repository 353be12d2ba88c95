"""One cell from spec to record (cell.runner) on the tiny BERT: what the record says about the
data, the training, the test split and the model, what a training-only cell (a search trial)
returns, and the record a failing cell leaves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from peft_arena.cell.entry import run_and_record, run_cell, train_cell
from peft_arena.common.errors import UserError
from peft_arena.records.store import read_record, record_path
from tests.support.specs import tiny_spec
from tests.support.synthetic import KEYWORDS

EPOCHS = 2
TRAIN, TEST = 48, 30  # tiny_spec's subsets: 3 batches of 16 an epoch


@pytest.fixture(scope="module")
def ran(tiny_bert, synth_task):
    # Retention (tests/measure/test_retention.py) would triple the time.
    spec = tiny_spec(tiny_bert, synth_task, epochs=EPOCHS, measure_retention=False)
    seen: list[dict] = []
    return spec, run_cell(spec, on_evaluate=seen.append), seen


def test_the_record_is_the_specs_and_says_so(ran) -> None:
    spec, record, _ = ran
    assert record["status"] == "ok" and record["error"] is None
    assert record["cell_id"] == spec.cell_id
    assert record["spec"] == json.loads(json.dumps(spec.to_dict()))
    assert record["resolved"]["label_names"] == KEYWORDS
    # compile: auto trains eagerly on the machines measured so far, and says so
    assert record["resolved"]["compile"]["setting"] == "auto"
    assert record["resolved"]["compile"]["compiled"] is False
    assert "compile_s" not in record["time"]["phases"]
    assert json.loads(json.dumps(record)) == record  # a record is plain JSON
    assert "retention" not in record and "weight_update" not in record  # not asked for


def test_training_takes_the_steps_the_spec_asks_for_and_validates_each_epoch(ran) -> None:
    _, record, seen = ran
    history = record["history"]
    assert [(e["epoch"], e["step"]) for e in history] == [(1, 3), (2, 6)]
    assert seen == history  # every validation pass reached the caller as it was made
    assert record["stopped_early"] is False and record["best_step"] is None
    final = history[-1]
    assert record["metrics"]["val_accuracy"] == final["val_accuracy"]


def test_the_test_metrics_are_those_of_the_stored_predictions(ran) -> None:
    _, record, _ = ran
    predictions = record["predictions"]
    y_true, y_pred = np.array(predictions["y_true"]), np.array(predictions["y_pred"])
    assert len(y_true) == len(y_pred) == TEST
    assert set(y_true) <= {0, 1, 2}
    assert record["metrics"]["accuracy"] == pytest.approx(float(np.mean(y_true == y_pred)))
    assert 0.0 <= record["metrics"]["macro_f1"] <= 1.0


def test_lora_trains_a_small_part_of_the_model(ran) -> None:
    _, record, _ = ran
    params = record["params"]
    assert 0 < params["trainable"] < params["total"]
    assert params["trainable_pct"] == pytest.approx(100 * params["trainable"] / params["total"])
    assert params["adapter_bytes"] > 0


def test_the_phases_add_up_and_each_was_timed(ran) -> None:
    _, record, _ = ran
    phases = record["time"]["phases"]
    for phase in ("setup_s", "data_s", "model_s", "train_s", "eval_s"):
        assert phases[phase] > 0, phase
    assert sum(phases.values()) == pytest.approx(record["time"]["total_s"], rel=0.05)


def test_a_training_only_cell_trains_the_same_and_never_tests(ran, tiny_bert, synth_task
                                                              ) -> None:
    spec, record, _ = ran
    outcome = train_cell(spec)
    assert [e["step"] for e in outcome.result.history] == [3, 6]
    # Same spec, same seed: the same training, to float rounding.
    for trained, recorded in zip(outcome.result.history, record["history"], strict=True):
        assert trained["val_loss"] == pytest.approx(recorded["val_loss"], rel=1e-4)
    assert outcome.val_accuracy == record["metrics"]["val_accuracy"]
    partial = outcome.record()
    assert partial["cell_id"] == spec.cell_id
    assert "accuracy" not in partial["metrics"] and not partial.get("predictions")
    assert "eval_s" not in outcome.phases  # the test split was never evaluated


def test_run_and_record_writes_the_record_with_its_run(tmp_path, tiny_bert, synth_task) -> None:
    spec = tiny_spec(tiny_bert, synth_task, "ia3", max_train_samples=16, max_eval_samples=8,
                     measure_retention=False)
    path = record_path(tmp_path, spec.cell_id)
    run_and_record(spec, path, None, run_id="run-1")
    written = read_record(path)
    assert (written["status"], written["run_id"], written["cell_id"]) == (
        "ok", "run-1", spec.cell_id)


def test_a_failing_cell_leaves_a_failed_record_naming_the_phase(tmp_path, synth_task) -> None:
    spec = tiny_spec(tmp_path / "no-model", synth_task)
    path = record_path(tmp_path, spec.cell_id)
    with pytest.raises(UserError):
        run_and_record(spec, path, None, run_id="run-2")
    written = read_record(path)
    assert (written["status"], written["run_id"]) == ("failed", "run-2")
    assert written["error"]["type"] == "UserError"
    assert written["error"]["phase"] in ("setup", "data", "tokenize", "model")
    assert str(tmp_path / "no-model") in written["error"]["message"]
