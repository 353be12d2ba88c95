"""The equal-budget search (matrix/search.py): the same trials for every strategy, never the
test split, resumable, and tuned records that say what the search chose and cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from peft_arena import api
from peft_arena.matrix import search
from peft_arena.matrix.execute import run_matrix
from peft_arena.records.store import iter_records

optuna = pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")

TRIALS = 2


def _cells(tiny_bert: Path, task: Path, strategies: list[str]) -> list:
    return api.plan_cells(tasks=[str(task)], strategies=strategies, model=str(tiny_bert),
                          seeds=[0], flags={"epochs": 1.0, "max_train_samples": 48,
                                            "max_eval_samples": 24, "batch_size": 16})


def _poisoned_copy(data_dir: Path, task: Path, where: Path) -> Path:
    """A data folder like `data_dir` whose task has every test label changed: anything that
    read the test split would see other numbers."""
    shutil.copytree(data_dir / "synth", where / "synth")
    shutil.copy(task, where / task.name)
    test = where / "synth" / "test.jsonl"
    rows = [json.loads(line) for line in test.read_text().splitlines() if line.strip()]
    test.write_text("".join(json.dumps({**r, "label": (r["label"] + 1) % 3}) + "\n"
                            for r in rows))
    return where


@pytest.mark.slow
def test_every_strategy_gets_the_same_trials_and_never_the_test_split(
        tiny_bert: Path, synth_task: Path, data_dir: Path, tmp_path: Path) -> None:
    cells = _cells(tiny_bert, synth_task, ["lora", "ia3"])
    first = search.run_tuned_matrix(cells, tmp_path / "a", TRIALS, data_dir=data_dir)
    assert [len(g.trials) for g in first.search.groups] == [TRIALS, TRIALS]
    for group in first.search.groups:
        assert all(t["state"] in ("complete", "pruned", "failed") for t in group.trials)
        assert group.trials[0]["default"]  # the first trial is the method's default
        assert {"learning_rate"} <= set(group.best_settings)
    records = {r["cell_id"]: r for r in iter_records(tmp_path / "a")}
    tuned = [r for r in records.values() if "tuning" in r]
    assert len(tuned) == 2
    for record in tuned:
        section = record["tuning"]
        assert section["budget"] == TRIALS and section["trials"] == TRIALS
        assert section["trials_s"] > 0 and section["evaluated_on"] == "validation"
    trial_records = list(iter_records(tmp_path / "a" / search.SEARCH_SUBDIR))
    assert trial_records and all(r["spec"]["evaluate_on"] == "validation"
                                 for r in trial_records)

    # The same search over a copy whose test labels are all wrong chooses the same settings
    # from the same validation scores (trials only: no test cells to run).
    poisoned_dir = _poisoned_copy(data_dir, synth_task, tmp_path / "poisoned")
    poisoned = _cells(tiny_bert, poisoned_dir / synth_task.name, ["lora"])
    second = search.run_search(
        poisoned, tmp_path / "b", TRIALS,
        run_round=lambda c, env, folder: run_matrix(c, folder, poisoned_dir, cell_env=env))
    lora = first.search.groups[0]
    assert lora.base.strategy == "lora"
    assert second.groups[0].best_settings == lora.best_settings
    assert [t["val_accuracy"] for t in second.groups[0].trials] == [
        t["val_accuracy"] for t in lora.trials]


@pytest.mark.slow
def test_an_interrupted_search_resumes_where_it_stopped(
        tiny_bert: Path, synth_task: Path, data_dir: Path, tmp_path: Path) -> None:
    cells = _cells(tiny_bert, synth_task, ["lora"])
    trials = 3
    calls = []

    def run_round(trial_cells, env, folder):
        calls.append(len(calls))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second round: its trial stays asked
        run_matrix(trial_cells, folder, data_dir, cell_env=env)

    with pytest.raises(KeyboardInterrupt):
        search.run_search(cells, tmp_path, trials, run_round=run_round)
    calls.clear()
    resumed = search.run_search(
        cells, tmp_path, trials,
        run_round=lambda c, env, folder: (calls.append(1),
                                          run_matrix(c, folder, data_dir, cell_env=env)))
    assert len(calls) == trials - 1  # the first round was kept; two rounds remain
    [group] = resumed.groups
    assert [t["number"] for t in group.trials] == list(range(trials))
