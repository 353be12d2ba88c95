"""Reliability across real processes: a failing cell, kill -9 and Ctrl-C at a known moment,
then the same command again; two runs on one results folder at once.

Cells run on the tiny BERT with a few dozen examples; fault injection (tests.support.faults,
PEFT_ARENA_FAULT) makes a chosen cell fail, or wait to be killed, at a chosen phase, and logs
the moment (PEFT_ARENA_FAULT_LOG).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from peft_arena import cli
from peft_arena.records import store
from tests.matrix.test_reliability import make_custom_code_model
from tests.support.faults import FAULT_ENV, FAULT_LOG_ENV, fault_env

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="checks processes through /proc (Linux only)"),
    pytest.mark.slow,  # each test starts, kills and resumes cell processes: about a minute
]

SMALL = ["--epochs", "1", "--max-train-samples", "30", "--max-eval-samples", "30",
         "--set", "batch_size=16", "--set", "learning_rate=1e-2"]


def _run_args(task: Path, model: Path, results: Path, strategies: str) -> list[str]:
    return ["run", "--matrix", str(task), "--strategies", strategies, "--model", str(model),
            "--results", str(results), *SMALL]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, FAULT_LOG_ENV)}
    return {**env, "PEFT_ARENA_QUIET": "1", "HF_HUB_OFFLINE": "1", **extra}


def _start(args: list[str], **env: str) -> subprocess.Popen:
    # A session of its own: Ctrl-C goes to its whole process group, as a terminal sends it.
    # Ctrl-C handled as a terminal's program has it, even where this suite runs as a
    # background job, whose shell starts it (and so the matrix) ignoring SIGINT.
    return subprocess.Popen([sys.executable, "-m", "peft_arena", *args], env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _finish(process: subprocess.Popen, timeout: float = 180.0) -> tuple[str, str]:
    """Its output once it exits; if it does not, kill its group and fail with what it said."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"still running {timeout:.0f} s later:\n{out}\n{err}") from None


def _wait_for(condition, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _fault_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _live_processes(group: int) -> list[int]:
    """Processes of a process group that still run (a zombie is dead, only not yet reaped)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _snapshot(results: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in store.records_dir(results).glob("*.json")}


def _by_strategy(results: Path) -> dict[str, tuple[str, dict]]:
    """strategy -> (record file name, record), for a matrix of one task and seed."""
    return {json.loads(b)["spec"]["strategy"]: (name, json.loads(b))
            for name, b in _snapshot(results).items()}


def _no_leftovers(results: Path) -> None:
    folder = store.records_dir(results)
    assert not list(folder.glob(f".*{store.TEMP_SUFFIX}"))
    for path in folder.glob("*.json"):
        json.loads(path.read_text())  # every record parses, strictly


def _call_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["peft-arena", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exited:
        code = exited.code
    out, err = capsys.readouterr()
    return code, out + err


def test_failing_cells_are_recorded_the_matrix_goes_on_and_retry_runs_only_them(
        tmp_path, monkeypatch, capsys, tiny_bert, synth_task):
    # The model ships its own code: the ok cell also shows --trust-remote-code reaching it.
    model = make_custom_code_model(tiny_bert, tmp_path / "custom")
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("ARENA_REMOTE_CODE_MARKER", str(marker))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    results = tmp_path / "results"
    args = [*_run_args(synth_task, model, results, "lora,ia3,full"), "--trust-remote-code",
            # PEFT has no default targets for a model type it does not know.
            "--set", "lora.target_modules=[query,value]"]

    # lora: an exception the cell records itself; ia3: the process dies by SIGKILL, as from
    # the kernel's out-of-memory killer, and the matrix records it.
    for name, value in fault_env("oom@data@__lora__,kill@start@__ia3__").items():
        monkeypatch.setenv(name, value)
    code, output = _call_cli(monkeypatch, capsys, *args)
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

    code, output = _call_cli(monkeypatch, capsys, "report", "--results", results)
    assert code == 0, output
    board = (results / "leaderboard.md").read_text()
    for strategy, error in (("lora", "OutOfMemoryError"), ("ia3", "CellCrashed")):
        row = next(line for line in board.splitlines() if f"| {strategy} " in line)
        assert f"failed ({error}" in row
        assert "0.000" not in row  # a failed cell has no score, never a zero

    monkeypatch.setenv(FAULT_ENV, "kill@start@__ia3__")  # ia3 keeps failing; lora is fixed
    before = _snapshot(results)
    code, output = _call_cli(monkeypatch, capsys, *args)  # without --retry-failed: nothing runs
    assert code == 1, output  # the folder still holds failed cells
    assert "3 skipped" in output and _snapshot(results) == before

    code, output = _call_cli(monkeypatch, capsys, *args, "--retry-failed")
    assert code == 1, output
    after = _snapshot(results)
    assert sorted(after) == sorted(before)
    names = {strategy: name for strategy, (name, _) in records.items()}
    assert after[names["full"]] == before[names["full"]]  # the ok cell is untouched
    assert json.loads(after[names["lora"]])["status"] == "ok"
    retried = json.loads(after[names["ia3"]])
    assert retried["status"] == "failed" and retried["run_id"] != ia3["run_id"]
    _no_leftovers(results)


def test_kill_and_ctrl_c_at_any_moment_lose_nothing_and_resume(tmp_path, tiny_bert, synth_task):
    results, log = tmp_path / "results", tmp_path / "faults.log"
    args = _run_args(synth_task, tiny_bert, results, "full,lora")
    # The lora cell waits in its training phase, where the test interrupts or kills it.
    fault = fault_env("sleep@train@__lora__", log)

    def start_until_lora_sleeps() -> subprocess.Popen:
        fired = len(_fault_lines(log))
        process = _start(args, **fault)
        _wait_for(lambda: len(_fault_lines(log)) > fired or process.poll() is not None,
                  "the lora cell to reach training")
        assert process.poll() is None, process.communicate()
        return process

    # 1. Ctrl-C while lora trains: the cell is stopped, exit 130, the way back is said.
    matrix = start_until_lora_sleeps()
    os.killpg(matrix.pid, signal.SIGINT)
    out, err = _finish(matrix)
    assert matrix.returncode == 130, out + err
    said = " ".join(out.split())  # undo the console's line wrapping
    assert "Interrupted. 1 cells finished" in said
    assert "Run the same command again to resume" in said
    assert "Traceback" not in err
    assert _live_processes(matrix.pid) == []  # the cell was cleaned up with it
    kept = _snapshot(results)
    assert [json.loads(b)["spec"]["strategy"] for b in kept.values()] == ["full"]

    # 2. kill -9 of the matrix itself while lora trains again: its cell dies too.
    matrix = start_until_lora_sleeps()
    os.kill(matrix.pid, signal.SIGKILL)
    _finish(matrix)
    _wait_for(lambda: _live_processes(matrix.pid) == [], "the orphaned cell to die", 15)
    assert _snapshot(results) == kept

    # 3. The same command again, without faults: the unfinished cell runs, the other is kept.
    done = subprocess.run([sys.executable, "-m", "peft_arena", *args], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 ok, 1 skipped" in done.stdout
    final = _snapshot(results)
    assert len(final) == 2
    assert {k: v for k, v in final.items() if k in kept} == kept
    assert all(json.loads(b)["status"] == "ok" for b in final.values())
    _no_leftovers(results)


def test_two_runs_at_once_run_each_cell_exactly_once(tmp_path, tiny_bert, synth_task):
    results = tmp_path / "results"
    args = _run_args(synth_task, tiny_bert, results, "full,lora,ia3")
    runs = [_start(args), _start(args)]
    outputs = [run.communicate(timeout=400) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err

    records = [json.loads(b) for b in _snapshot(results).values()]
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
    _no_leftovers(results)
