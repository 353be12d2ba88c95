"""The equal-budget search's trials run through the matrix's executor like any cell: the
same trials, with the same settings drawn, on a local Ray cluster and through submitit's
local executor (the Slurm path without sbatch) as on local processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from peft_arena import api
from peft_arena.matrix import search
from peft_arena.matrix.executors import ExecutorSettings
from peft_arena.records.store import iter_records

optuna = pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")

TRIALS = 2
STRATEGIES = ["lora", "ia3"]


def _cells(tiny_bert: Path, task: Path) -> list:
    # Retention off: it is not what these tests look at, and it costs a process per run.
    return api.plan_cells(tasks=[str(task)], strategies=STRATEGIES, model=str(tiny_bert),
                          seeds=[0], flags={"epochs": 1.0, "max_train_samples": 48,
                                            "max_eval_samples": 24, "batch_size": 16,
                                            "measure_retention": False})


def _trials(result: search.SearchResult) -> list[list[tuple]]:
    """Per strategy: each trial's number, whether it ended (complete or pruned) and the
    settings it drew."""
    return [[(t["number"], t["state"] in ("complete", "pruned"),
              tuple(sorted(t["settings"].items()))) for t in group.trials]
            for group in result.groups]


@pytest.fixture(scope="module")
def local_search(tiny_bert, synth_task, data_dir, tmp_path_factory) -> search.SearchResult:
    folder = tmp_path_factory.mktemp("search-local")
    return search.run_tuned_matrix(_cells(tiny_bert, synth_task), folder, TRIALS,
                                   data_dir=data_dir).search


def _check_like_local(result: search.TunedMatrix, local: search.SearchResult,
                      results: Path, executor: str) -> None:
    assert [len(g.trials) for g in result.search.groups] == [TRIALS] * len(STRATEGIES)
    assert _trials(result.search) == _trials(local)
    trial_records = list(iter_records(results / search.SEARCH_SUBDIR))
    assert len(trial_records) == TRIALS * len(STRATEGIES)
    assert {r["execution"]["executor"] for r in trial_records} == {executor}
    tuned = [r for r in iter_records(results) if "tuning" in r]
    assert len(tuned) == len(STRATEGIES)
    assert all(r["tuning"]["trials"] == TRIALS for r in tuned)


@pytest.mark.slow
def test_search_trials_on_a_local_ray_cluster_match_the_local_search(
        tiny_bert, synth_task, data_dir, tmp_path, local_search):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = search.run_tuned_matrix(_cells(tiny_bert, synth_task), tmp_path, TRIALS,
                                         data_dir=data_dir,
                                         executor=ExecutorSettings(name="ray"))
    finally:
        ray.shutdown()
    _check_like_local(result, local_search, tmp_path, "ray")


@pytest.mark.slow
def test_search_trials_through_submitit_local_jobs_match_the_local_search(
        tiny_bert, synth_task, data_dir, tmp_path, local_search):
    pytest.importorskip("submitit", reason="the slurm extra is not installed")
    result = search.run_tuned_matrix(
        _cells(tiny_bert, synth_task), tmp_path, TRIALS, data_dir=data_dir,
        executor=ExecutorSettings(name="slurm", slurm={"cluster": "local", "time_min": 5}))
    _check_like_local(result, local_search, tmp_path, "slurm")
