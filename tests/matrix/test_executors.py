"""Executors: local workers in parallel (and a kill -9 with two cells in flight), a Ray local
cluster (records written by the driver; a worker killed mid-cell), the Slurm path through
submitit's local executor, and one cell over two CPU processes (gloo).

Cells run on the tiny BERT with a few dozen examples; PEFT_ARENA_FAULT makes chosen cells wait
in training so that a test can kill them (or their worker) at a known moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from peft_arena import api
from peft_arena.matrix.execute import run_matrix
from peft_arena.matrix.executors import ExecutorSettings
from peft_arena.records import store
from tests.support.faults import fault_env
from tests.support.processes import (
    fault_lines,
    finish,
    live_processes,
    no_leftovers,
    process_env,
    run_args,
    snapshot,
    start,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="checks processes through /proc (Linux only)"),
    pytest.mark.slow,  # each test starts, kills and resumes cell processes: about a minute
]


def _cells(task: Path, model: Path, strategies: list[str], **flags) -> list:
    return api.plan_cells(tasks=[str(task)], strategies=strategies, model=str(model),
                          sets=["batch_size=16", "learning_rate=1e-2", *flags.pop("sets", [])],
                          flags={"epochs": 1, "max_train_samples": 30, "max_eval_samples": 30,
                                 **flags})


def _records(results: Path) -> dict[str, dict]:
    return {r["spec"]["strategy"]: r for r in map(json.loads, snapshot(results).values())}


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _kill_parents_of_sleeping_cells(log: Path, times: int, stop: threading.Event) -> None:
    """Kill the worker process (the cell's parent) of each cell that reaches its fault, up to
    `times` kills; in a thread, while the matrix runs in the test's own."""
    killed = 0
    while killed < times and not stop.is_set():
        lines = fault_lines(log)
        if len(lines) > killed:
            pid = int(lines[killed][2])
            os.kill(_parent(pid), signal.SIGKILL)
            killed += 1
        stop.wait(0.2)


def test_two_local_workers_record_each_cell_once_and_survive_kill_9(tmp_path, tiny_bert,
                                                                   synth_task):
    results, log = tmp_path / "results", tmp_path / "faults.log"
    args = [*run_args(synth_task, tiny_bert, results, "lora,ia3"), "--workers", "2"]
    # lora and ia3 start together and wait in training: two cells in flight at the kill.
    matrix = start(args, **fault_env("sleep@train@__lora__,sleep@train@__ia3__", log))
    wait_for(lambda: len(fault_lines(log)) == 2 or matrix.poll() is not None,
              "two cells in training at once")
    assert matrix.poll() is None, matrix.communicate()
    os.kill(matrix.pid, signal.SIGKILL)
    finish(matrix)
    wait_for(lambda: live_processes(matrix.pid) == [], "the orphaned cells to die", 15)
    assert snapshot(results) == {}  # nothing half-done was recorded

    done = subprocess.run([sys.executable, "-m", "peft_arena", *args], env=process_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 ok" in done.stdout
    records = _records(results)
    assert sorted(records) == ["ia3", "lora"]  # each exactly once (one file per cell)
    cores = len(os.sched_getaffinity(0))
    for record in records.values():
        assert record["status"] == "ok"
        execution = record["execution"]
        assert (execution["executor"], execution["workers"]) == ("local", 2)
        # The cores are split between the two workers, and the record says so.
        assert execution["threads"] == max(1, cores // 2)
        assert execution["environment"]["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    no_leftovers(results)


def test_ray_local_cluster_driver_writes_records_and_a_lost_worker_fails_once(
        tmp_path, monkeypatch, tiny_bert, synth_task):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    log = tmp_path / "faults.log"
    # Set before the cluster starts: its workers (and so the cells) inherit it.
    for name, value in fault_env("sleep@train@__ia3__", log).items():
        monkeypatch.setenv(name, value)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = tmp_path / "results"
        stop = threading.Event()
        # The ia3 cell's worker is killed, Ray retries the task once, and that worker is
        # killed too: the cell is lost for good.
        killer = threading.Thread(target=_kill_parents_of_sleeping_cells,
                                  args=(log, 2, stop), daemon=True)
        killer.start()
        try:
            result = run_matrix(_cells(synth_task, tiny_bert, ["lora", "ia3"]), results,
                                executor=ExecutorSettings(name="ray"))
        finally:
            stop.set()
        assert len(fault_lines(log)) == 2  # the cell ran twice: the retry happened
    finally:
        ray.shutdown()
    assert (result.count("ok"), result.count("failed")) == (1, 1)
    records = _records(results)
    assert sorted(records) == ["ia3", "lora"]
    lora, ia3 = records["lora"], records["ia3"]
    assert lora["status"] == "ok" and lora["execution"]["executor"] == "ray"
    assert "Ray node" in lora["execution"]["worker"]
    assert ia3["status"] == "failed" and ia3["error"]["type"] == "CellCrashed"
    assert "Ray worker running it" in ia3["error"]["message"]
    assert ia3["execution"]["worker"].split(" (")[0] in ia3["error"]["message"]
    # The report reads them like local records.
    from peft_arena.report.build import build_report

    board = build_report(results).summary
    assert set(board["strategy"]) == {"lora", "ia3"}
    no_leftovers(results)


def test_slurm_path_through_submitit_local_jobs(tmp_path, monkeypatch, tiny_bert, synth_task):
    pytest.importorskip("submitit", reason="the slurm extra is not installed")
    results, log = tmp_path / "results", tmp_path / "faults.log"
    for name, value in fault_env("sleep@train@__ia3__", log).items():
        monkeypatch.setenv(name, value)
    stop = threading.Event()

    def cancel_ia3_job() -> None:  # as scancel would: the job's process is interrupted
        wait_for(lambda: fault_lines(log) or stop.is_set(), "the ia3 cell to train")
        if not stop.is_set():
            os.kill(_parent(int(fault_lines(log)[0][2])), signal.SIGINT)

    canceller = threading.Thread(target=cancel_ia3_job, daemon=True)
    canceller.start()
    try:
        result = run_matrix(
            _cells(synth_task, tiny_bert, ["lora", "ia3"]), results,
            executor=ExecutorSettings(name="slurm", slurm={"cluster": "local", "time_min": 5}))
    finally:
        stop.set()
    assert (result.count("ok"), result.count("failed")) == (1, 1)
    records = _records(results)
    assert records["lora"]["status"] == "ok"
    assert "Slurm job" in records["lora"]["execution"]["worker"]
    ia3 = records["ia3"]
    assert ia3["status"] == "failed" and "Slurm job" in ia3["error"]["message"]
    assert "without a result" in ia3["error"]["message"]
    # Job ids are kept only while cells run; finished cells leave none behind.
    assert not list((store.records_dir(results) / ".locks").glob("*.slurm.json"))

    # A rerun submits nothing for recorded cells.
    again = run_matrix(_cells(synth_task, tiny_bert, ["lora", "ia3"]), results,
                       executor=ExecutorSettings(name="slurm", slurm={"cluster": "local"}))
    assert again.count("skipped") == 2


def test_one_cell_over_two_cpu_processes_counts_each_test_example_once(tmp_path, tiny_bert,
                                                                      synth_task):
    results = tmp_path / "results"
    one = _cells(synth_task, tiny_bert, ["full"], sets=["seed=0"])
    two = _cells(synth_task, tiny_bert, ["full"], sets=["devices_per_cell=2"])
    assert two[0].cell_id != one[0].cell_id  # a different measurement, its own record
    assert run_matrix([*one, *two], results).count("ok") == 2
    by_processes = {r["execution"]["processes"]: r for r in map(json.loads,
                                                               snapshot(results).values())}
    single, double = by_processes[1], by_processes[2]
    assert double["execution"]["distributed_type"] == "MULTI_CPU"
    assert single["execution"]["distributed_type"] == "NO"
    # Every test example predicted exactly once, in the split's order, as in one process.
    assert double["predictions"]["y_true"] == single["predictions"]["y_true"]
    assert len(double["predictions"]["y_pred"]) == double["resolved"]["test_examples"]
    # Global batch size: the same optimizer steps as the one-process cell.
    assert double["resolved"]["total_steps"] == single["resolved"]["total_steps"]
    assert [h["step"] for h in double["history"]] == [h["step"] for h in single["history"]]
    assert abs(double["metrics"]["accuracy"] - single["metrics"]["accuracy"]) <= 0.15
    ranks = double["execution"]["per_rank_peak_bytes"]
    assert len(ranks) == 2 and double["memory"]["peak_bytes"] == max(ranks)
    assert double["compute"]["peak_devices"] == 2
    assert "x2 processes" in double["execution"]["hardware"]
