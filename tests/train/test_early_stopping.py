"""Evaluation cadence, early stopping and restoring the best weights before the test."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from peft_arena.cell.entry import run_cell
from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.train.early_stopping import EarlyStopping
from tests.support.specs import tiny_spec


def _spec(tiny_bert, synth_task, **overrides) -> CellSpec:
    # A constant learning rate makes a shorter run retrace a longer one's first epochs exactly.
    # Patience 1: the tiny model's validation loss falls unevenly, so one rise soon comes.
    settings = dict(lr_scheduler="constant", warmup_ratio=0.0, max_train_samples=60,
                    max_eval_samples=None, epochs=12, early_stopping_patience=1,
                    early_stopping_metric="val_loss")
    return tiny_spec(tiny_bert, synth_task, "full", **{**settings, **overrides})


def test_early_stopping_class_stops_and_restores_the_best_weights():
    layer = torch.nn.Linear(2, 1)
    frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    layer.register_parameter("frozen", frozen)
    stopper = EarlyStopping("val_accuracy", patience=2)
    values = [0.5, 0.7, 0.7, 0.6]  # a tie is no improvement
    stops = []
    for step, accuracy in enumerate(values, start=1):
        with torch.no_grad():
            layer.weight.fill_(float(step))
        stops.append(stopper.update(layer, {"step": step, "val_accuracy": accuracy}))
    assert stops == [False, False, False, True]
    assert stopper.best == {"step": 2, "val_accuracy": 0.7}
    stopper.restore(layer)
    assert layer.weight.tolist() == [[2.0, 2.0]]
    assert set(stopper._weights) == {"weight", "bias"}  # frozen weights are never copied


def test_loss_metric_prefers_lower_values():
    stopper = EarlyStopping("val_loss", patience=1)
    layer = torch.nn.Linear(1, 1)
    assert not stopper.update(layer, {"step": 1, "val_loss": 1.0})
    assert not stopper.update(layer, {"step": 2, "val_loss": 0.5})
    assert stopper.update(layer, {"step": 3, "val_loss": 0.9})
    assert stopper.best["step"] == 2


def test_overfitting_run_stops_and_tests_the_best_epoch(tiny_bert, synth_task, data_dir):
    spec = _spec(tiny_bert, synth_task)
    record = run_cell(spec, data_dir)
    history = record["history"]
    losses = [entry["val_loss"] for entry in history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert record["stopped_early"] is True
    assert len(history) < spec.epochs
    # It stopped exactly `patience` passes after the best one.
    assert len(history) == best + 1 + spec.early_stopping_patience
    assert record["best_step"] == history[best]["step"]
    assert record["metrics"]["val_accuracy"] == history[best]["val_accuracy"]
    for entry in history:
        assert set(entry) == {"epoch", "step", "train_loss", "val_loss", "val_accuracy",
                              "val_macro_f1"}

    # The same run cut at the best epoch, without early stopping, holds the same weights:
    # the restored model must score exactly what a fresh evaluation at that point scores.
    at_best = dataclasses.replace(spec, epochs=history[best]["epoch"],
                                  early_stopping_patience=None)
    fresh = run_cell(at_best, data_dir)
    assert fresh["history"][-1]["val_loss"] == pytest.approx(history[best]["val_loss"], abs=1e-6)
    assert record["metrics"]["accuracy"] == fresh["metrics"]["accuracy"]
    assert record["metrics"]["eval_loss"] == pytest.approx(fresh["metrics"]["eval_loss"],
                                                           abs=1e-6)
    assert fresh["stopped_early"] is False and fresh["best_step"] is None


def test_step_cadence_validates_every_n_steps_and_at_the_end(tiny_bert, synth_task, data_dir):
    spec = _spec(tiny_bert, synth_task, epochs=2, eval_every=3, early_stopping_patience=None)
    record = run_cell(spec, data_dir)
    steps = [entry["step"] for entry in record["history"]]
    total = record["resolved"]["total_steps"]  # 54 examples in batches of 16: 4 per epoch
    assert total == 8
    assert steps == [3, 6, 8]
    assert record["history"][0]["epoch"] == pytest.approx(0.75)


@pytest.mark.parametrize("settings, message", [
    ({"eval_every": "0"}, "eval_every"),
    ({"eval_every": "sometimes"}, "eval_every"),
    ({"early_stopping_patience": 0}, "early_stopping_patience"),
    ({"early_stopping_metric": "test_accuracy"}, "early_stopping_metric"),
    ({"tracker": "neptune"}, "tracker"),
])
def test_bad_settings_are_user_errors(settings, message):
    with pytest.raises(UserError, match=message):
        CellSpec(model="m", task="t", strategy="lora", **settings)


def test_watching_and_saving_do_not_change_the_cell_identity():
    base = CellSpec(model="m", task="t", strategy="lora")
    assert dataclasses.replace(base, save_model=True, tracker="tensorboard").cell_id \
        == base.cell_id
    assert dataclasses.replace(base, eval_every=200).cell_id \
        == dataclasses.replace(base, eval_every="200").cell_id
    assert dataclasses.replace(base, early_stopping_patience=3).cell_id != base.cell_id



@pytest.mark.parametrize("name", ["wandb", "mlflow", "tensorboard"])
def test_absent_tracker_package_gets_an_install_hint(name):
    from peft_arena.train import trackers

    if trackers._AVAILABLE[name]():
        pytest.skip(f"{name} is installed here, so its absence cannot be shown")
    with pytest.raises(UserError, match=rf"pip install 'peft-arena\[{name}\]'"):
        trackers.check_available(name)


def test_tensorboard_tracker_logs_every_validation_pass(tiny_bert, synth_task, data_dir,
                                                        tmp_path):
    from accelerate.utils import is_tensorboard_available

    if not is_tensorboard_available():
        pytest.skip("tensorboard is not installed (pip install 'peft-arena[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = _spec(tiny_bert, synth_task, epochs=2, early_stopping_patience=None,
                 tracker="tensorboard")
    record = run_cell(spec, data_dir, results_dir=tmp_path)
    # Scalars go to RESULTS/tensorboard/<cell>/peft-arena/; the settings (hparams) to a
    # sub-folder of their own.
    logged = EventAccumulator(str(tmp_path / "tensorboard" / spec.cell_id / "peft-arena"))
    logged.Reload()
    accuracy = [(e.step, e.value) for e in logged.Scalars("val_accuracy")]
    assert accuracy == [(e["step"], pytest.approx(e["val_accuracy"]))
                        for e in record["history"]]
    assert logged.Scalars("test_accuracy")[0].value == pytest.approx(
        record["metrics"]["accuracy"])
