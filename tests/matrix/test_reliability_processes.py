"""Reliability across real processes: a failing cell, kill -9 and Ctrl-C at a known moment,
then the same command again; two runs on one results folder at once.

Cells run on the tiny BERT with a few dozen examples; fault injection (tests.support.faults,
PEFT_ARENA_FAULT) makes a chosen cell fail, or wait to be killed, at a chosen phase, and logs
the moment (PEFT_ARENA_FAULT_LOG).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support.cli import call_cli
from tests.support.faults import FAULT_ENV, fault_env
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
from tests.support.tiny_models import make_custom_code_model

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="checks processes through /proc (Linux only)"),
    pytest.mark.slow,  # each test starts, kills and resumes cell processes: about a minute
]


def _by_strategy(results: Path) -> dict[str, tuple[str, dict]]:
    """strategy -> (record file name, record), for a matrix of one task and seed."""
    return {json.loads(b)["spec"]["strategy"]: (name, json.loads(b))
            for name, b in snapshot(results).items()}


def test_failing_cells_are_recorded_the_matrix_goes_on_and_retry_runs_only_them(
        tmp_path, monkeypatch, capsys, tiny_bert, synth_task):
    # The model ships its own code: the ok cell also shows --trust-remote-code reaching it.
    model = make_custom_code_model(tiny_bert, tmp_path / "custom")
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("ARENA_REMOTE_CODE_MARKER", str(marker))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    results = tmp_path / "results"
    args = [*run_args(synth_task, model, results, "lora,ia3,full"), "--trust-remote-code",
            # PEFT has no default targets for a model type it does not know.
            "--set", "lora.target_modules=[query,value]"]

    # lora: an exception the cell records itself; ia3: the process dies by SIGKILL, as from
    # the kernel's out-of-memory killer, and the matrix records it.
    for name, value in fault_env("oom@data@__lora__,kill@start@__ia3__").items():
        monkeypatch.setenv(name, value)
    code, output = call_cli(monkeypatch, capsys, *args)
    assert code == 1, output
    assert "OutOfMemoryError in data" in output and "CellCrashed in process" in output
    records = _by_strategy(results)
    lora, ia3, full = (records[name][1] for name in ("lora", "ia3", "full"))
    assert (lora["status"], lora["error"]["type"], lora["error"]["phase"]) == (
        "failed", "OutOfMemoryError", "data")
    assert (ia3["status"], ia3["error"]["type"], ia3["error"]["phase"]) == (
        "failed", "CellCrashed", "process")
    assert "SIGKILL" in ia3["error"]["message"]
    assert full["status"] == "ok"  # the matrix went on
    assert full["resolved"]["trust_remote_code"] is True and marker.read_text() == "ran"

    code, output = call_cli(monkeypatch, capsys, "report", "--results", results)
    assert code == 0, output
    board = (results / "leaderboard.md").read_text()
    for strategy, error in (("lora", "OutOfMemoryError"), ("ia3", "CellCrashed")):
        row = next(line for line in board.splitlines() if f"| {strategy} " in line)
        assert f"failed ({error}" in row
        assert "0.000" not in row  # a failed cell has no score, never a zero

    monkeypatch.setenv(FAULT_ENV, "kill@start@__ia3__")  # ia3 keeps failing; lora is fixed
    before = snapshot(results)
    code, output = call_cli(monkeypatch, capsys, *args)  # without --retry-failed: nothing runs
    assert code == 1, output  # the folder still holds failed cells
    assert "3 skipped" in output and snapshot(results) == before

    code, output = call_cli(monkeypatch, capsys, *args, "--retry-failed")
    assert code == 1, output
    after = snapshot(results)
    assert sorted(after) == sorted(before)
    names = {strategy: name for strategy, (name, _) in records.items()}
    assert after[names["full"]] == before[names["full"]]  # the ok cell is untouched
    assert json.loads(after[names["lora"]])["status"] == "ok"
    retried = json.loads(after[names["ia3"]])
    assert retried["status"] == "failed" and retried["run_id"] != ia3["run_id"]
    no_leftovers(results)


def test_kill_and_ctrl_c_at_any_moment_lose_nothing_and_resume(tmp_path, tiny_bert, synth_task):
    results, log = tmp_path / "results", tmp_path / "faults.log"
    args = run_args(synth_task, tiny_bert, results, "full,lora")
    # The lora cell waits in its training phase, where the test interrupts or kills it.
    fault = fault_env("sleep@train@__lora__", log)

    def start_until_lora_sleeps() -> subprocess.Popen:
        fired = len(fault_lines(log))
        process = start(args, **fault)
        wait_for(lambda: len(fault_lines(log)) > fired or process.poll() is not None,
                  "the lora cell to reach training")
        assert process.poll() is None, process.communicate()
        return process

    # 1. Ctrl-C while lora trains: the cell is stopped, exit 130, the way back is said.
    matrix = start_until_lora_sleeps()
    os.killpg(matrix.pid, signal.SIGINT)
    out, err = finish(matrix)
    assert matrix.returncode == 130, out + err
    said = " ".join(out.split())  # undo the console's line wrapping
    assert "Interrupted. 1 cells finished" in said
    assert "Run the same command again to resume" in said
    assert "Traceback" not in err
    assert live_processes(matrix.pid) == []  # the cell was cleaned up with it
    kept = snapshot(results)
    assert [json.loads(b)["spec"]["strategy"] for b in kept.values()] == ["full"]

    # 2. kill -9 of the matrix itself while lora trains again: its cell dies too.
    matrix = start_until_lora_sleeps()
    os.kill(matrix.pid, signal.SIGKILL)
    finish(matrix)
    wait_for(lambda: live_processes(matrix.pid) == [], "the orphaned cell to die", 15)
    assert snapshot(results) == kept

    # 3. The same command again, without faults: the unfinished cell runs, the other is kept.
    done = subprocess.run([sys.executable, "-m", "peft_arena", *args], env=process_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 ok, 1 skipped" in done.stdout
    final = snapshot(results)
    assert len(final) == 2
    assert {k: v for k, v in final.items() if k in kept} == kept
    assert all(json.loads(b)["status"] == "ok" for b in final.values())
    no_leftovers(results)


def test_two_runs_at_once_run_each_cell_exactly_once(tmp_path, tiny_bert, synth_task):
    results = tmp_path / "results"
    args = run_args(synth_task, tiny_bert, results, "full,lora,ia3")
    runs = [start(args), start(args)]
    outputs = [run.communicate(timeout=400) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err

    records = [json.loads(b) for b in snapshot(results).values()]
    assert sorted(r["spec"]["strategy"] for r in records) == ["full", "ia3", "lora"]
    assert all(r["status"] == "ok" for r in records)
    # Each run names itself ("run <id>: 2 ok, 1 busy"); the records say which run made them.
    said = {}
    for out, _ in outputs:
        run_id, counts = re.search(r"^run (\S+): (.*)$", out, re.MULTILINE).groups()
        ok = re.search(r"(\d+) ok", counts)
        said[run_id] = int(ok.group(1)) if ok else 0
    assert sum(said.values()) == 3  # a cell run twice would count twice
    assert Counter(r["run_id"] for r in records) == Counter(
        {run_id: n for run_id, n in said.items() if n})
    no_leftovers(results)
