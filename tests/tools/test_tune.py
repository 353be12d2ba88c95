"""Hyper-parameter search: search spaces, pruning, resuming, and the preset it writes."""

from __future__ import annotations

import dataclasses
import sys

import pytest
from click.testing import CliRunner

from peft_arena import api
from peft_arena.cell import runner
from peft_arena.cli import cli
from peft_arena.common.errors import UserError
from peft_arena.matrix.budget import count_cell_parameters
from peft_arena.strategies import load_strategies
from peft_arena.tools.tune import (
    DefaultsSpace,
    TrialSpace,
    apply_settings,
    current_settings,
    parse_objectives,
    pruning_reporter,
    tune,
)
from peft_arena.train import loop

optuna = pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")



def _base(tiny_bert, synth_task, strategy="lora", **flags):
    # 1.0, not 1: the command line gives floats, and the cell identity tells them apart.
    flags = {"epochs": 1.0, "max_train_samples": 60, **flags}
    [cell] = api.plan_cells(tasks=[str(synth_task)], strategies=[strategy],
                            model=str(tiny_bert), seeds=[0], flags=flags)
    return cell


# The presets' methods, and LoRA variants with hooks of their own (their search is LoRA's).
SEARCHED = ["full", "lora", "qlora", "ia3", "adalora", "loha", "lokr", "vera", "oft", "fourierft",
            "prompt_tuning", "ln_tuning", "dora", "pissa", "eva", "lora_plus", "lora_fa"]


@pytest.mark.parametrize("strategy", SEARCHED)
def test_search_space_holds_the_defaults_and_builds(strategy, tiny_bert, synth_task):
    base = _base(tiny_bert, synth_task, strategy)
    current = current_settings(base)
    strategy_cls = load_strategies().get(strategy)
    defaults = strategy_cls(base).search_space(DefaultsSpace(current))
    assert {"learning_rate", "batch_size", "epochs", "weight_decay"} <= set(defaults)
    assert all(defaults[k] == current[k] for k in defaults)  # the baseline is the cell itself
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(3):
        trial = study.ask()
        drawn = strategy_cls(base).search_space(TrialSpace(trial, current, fixed={"epochs"}))
        assert drawn["epochs"] == base.epochs  # fixed on the command line: not searched
        assert "epochs" not in trial.params
        # Every draw is a valid cell whose model builds (counted on the meta device, in the
        # default model's shape: a search space is sized for real models, not the tiny one).
        spec = dataclasses.replace(apply_settings(base, drawn), model="minilm")
        assert count_cell_parameters(spec, num_labels=3).trainable > 0


def test_pruner_stops_a_trial_below_the_median():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                   n_warmup_steps=0))
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values={1: 0.8}))
    good = pruning_reporter(study.ask())
    good({"val_accuracy": 0.85})  # above the median: goes on
    hopeless = pruning_reporter(study.ask())
    with pytest.raises(optuna.TrialPruned, match="below the median"):
        hopeless({"val_accuracy": 0.1})


def test_tune_cli_search_resume_and_preset(tmp_path, tiny_bert, synth_task, monkeypatch):
    seen = []
    real_evaluate = loop.evaluate

    def spy(model, loader, accelerator, description):
        seen.append(description)
        return real_evaluate(model, loader, accelerator, description)

    # Validation runs in the loop, the test evaluation in the runner: watch both.
    monkeypatch.setattr(loop, "evaluate", spy)
    monkeypatch.setattr(runner, "evaluate", spy)
    storage, preset = tmp_path / "study.db", tmp_path / "best.yaml"
    args = ["tune", "--task", str(synth_task), "--strategy", "lora", "--trials", "3",
            "--model", str(tiny_bert), "--epochs", "1", "--max-train-samples", "60",
            "--storage", str(storage), "--out", str(preset)]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "(defaults)" in done.output and "best: trial" in done.output
    assert "test" not in seen and "validate" in seen  # trials never look at the test split

    study = optuna.load_study(study_name="synth-lora", storage=f"sqlite:///{storage}")
    assert len(study.trials) == 3
    baseline = study.trials[0]
    base = _base(tiny_bert, synth_task)
    assert baseline.user_attrs["baseline"] is True
    assert baseline.params["learning_rate"] == base.learning_rate
    assert baseline.params["r"] == base.peft["r"]
    assert baseline.params["target_modules"] is None  # PEFT's default targets
    assert "epochs" not in baseline.params  # fixed by --epochs
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert baseline in completed  # a later trial may be pruned at its first validation
    for trial in completed:
        assert [e["epoch"] for e in trial.user_attrs["history"]] == [1]

    # The written preset plans exactly the best trial's cell.
    best = study.best_trial
    [planned] = api.plan_cells(preset=str(preset))
    expected = apply_settings(base, best.user_attrs["settings"])
    assert planned.to_dict() == expected.to_dict()
    assert planned.config_hash() == expected.config_hash()
    assert planned.learning_rate == best.params["learning_rate"]
    assert planned.epochs == 1 and planned.max_train_samples == 60

    # Running again resumes: only the missing trial runs.
    result = tune(base, 4, fixed={"epochs", "max_train_samples"}, storage=storage,
                  preset_file=preset)
    assert result.ran == 1
    assert [row.number for row in result.trials] == [0, 1, 2, 3]
    assert result.baseline is not None and result.baseline.number == 0

    # A different question on the same study is refused.
    other = _base(tiny_bert, synth_task, max_train_samples=90)
    with pytest.raises(UserError, match="other settings"):
        tune(other, 4, fixed={"epochs", "max_train_samples"}, storage=storage,
             preset_file=preset)


def test_multi_objective_search_writes_the_most_accurate_pareto_trial(tmp_path, tiny_bert,
                                                                       synth_task):
    base = _base(tiny_bert, synth_task, "ia3")
    result = tune(base, 2, fixed={"epochs", "max_train_samples"}, storage=tmp_path / "s.db",
                  preset_file=tmp_path / "best.yaml",
                  objectives=parse_objectives("accuracy,trainable_params"))
    finished = [row for row in result.trials if row.values]
    assert finished and all(row.values["trainable_params"] > 0 for row in finished)
    study = optuna.load_study(study_name="synth-ia3", storage=result.storage)
    assert len(study.directions) == 2
    assert result.best.number in {t.number for t in study.best_trials}
    front = [t for t in study.best_trials]
    assert result.best.values["accuracy"] == max(t.values[0] for t in front)


@pytest.mark.parametrize("text", ["time", "accuracy,speed", "accuracy,accuracy"])
def test_bad_objectives_are_user_errors(text):
    with pytest.raises(UserError, match="--objective"):
        parse_objectives(text)


def test_missing_optuna_gets_an_install_hint(monkeypatch, tiny_bert, synth_task, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails
    with pytest.raises(UserError, match=r"pip install 'peft-arena\[tune\]'"):
        tune(_base(tiny_bert, synth_task), 1, fixed=set(), storage=tmp_path / "s.db",
             preset_file=tmp_path / "p.yaml")
