"""The equal-budget search's trials run through the matrix's executor like any cell: the
same trials, with the same settings drawn, on a local Ray cluster and through submitit's
local executor (the Slurm path without sbatch) as on local processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from peft_arena import api
from peft_arena.matrix import search
from peft_arena.matrix.execute import run_matrix
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


def _search(cells: list, results: Path, data_dir: Path,
            executor: ExecutorSettings | None = None) -> search.SearchResult:
    """The trials alone (the defaults and the tuned cells are ordinary cells), each round
    through run_matrix on `executor`."""
    return search.run_search(
        cells, results, TRIALS,
        run_round=lambda trial_cells, env, folder: run_matrix(
            trial_cells, folder, data_dir, cell_env=env, executor=executor))


@pytest.fixture(scope="module")
def local_search(tiny_bert, synth_task, data_dir, tmp_path_factory) -> search.SearchResult:
    return _search(_cells(tiny_bert, synth_task), tmp_path_factory.mktemp("search-local"),
                   data_dir)


def _check_like_local(result: search.SearchResult, local: search.SearchResult,
                      results: Path, executor: str) -> None:
    assert [len(g.trials) for g in result.groups] == [TRIALS] * len(STRATEGIES)
    assert _trials(result) == _trials(local)
    trial_records = list(iter_records(results / search.SEARCH_SUBDIR))
    assert len(trial_records) == TRIALS * len(STRATEGIES)
    assert {r["execution"]["executor"] for r in trial_records} == {executor}
    assert all(r["spec"]["evaluate_on"] == "validation" for r in trial_records)


@pytest.mark.slow
def test_search_trials_on_a_local_ray_cluster_match_the_local_search(
        tiny_bert, synth_task, data_dir, tmp_path, local_search):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = _search(_cells(tiny_bert, synth_task), tmp_path, data_dir,
                         ExecutorSettings(name="ray"))
    finally:
        ray.shutdown()
    _check_like_local(result, local_search, tmp_path, "ray")


@pytest.mark.slow
def test_search_trials_through_submitit_local_jobs_match_the_local_search(
        tiny_bert, synth_task, data_dir, tmp_path, local_search):
    pytest.importorskip("submitit", reason="the slurm extra is not installed")
    result = _search(_cells(tiny_bert, synth_task), tmp_path, data_dir,
                     ExecutorSettings(name="slurm", slurm={"cluster": "local", "time_min": 5}))
    _check_like_local(result, local_search, tmp_path, "slurm")
