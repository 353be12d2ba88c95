"""Real processes of `peft-arena run`: start one as a terminal would, wait for it, see which
of its processes still run (through /proc, Linux only), and read the records it left."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from peft_arena.records import store
from tests.support.faults import FAULT_ENV, FAULT_LOG_ENV

SMALL = ["--epochs", "1", "--max-train-samples", "30", "--max-eval-samples", "30",
         "--set", "batch_size=16", "--set", "learning_rate=1e-2"]


def run_args(task: Path, model: Path, results: Path, strategies: str) -> list[str]:
    return ["run", "--matrix", str(task), "--strategies", strategies, "--model", str(model),
            "--results", str(results), *SMALL]


def process_env(**extra: str) -> dict[str, str]:
    """This environment without fault injection, plus `extra`."""
    inherited = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, FAULT_LOG_ENV)}
    return {**inherited, "PEFT_ARENA_QUIET": "1", "HF_HUB_OFFLINE": "1", **extra}


def start(args: list[str], **env: str) -> subprocess.Popen:
    # A session of its own: Ctrl-C goes to its whole process group, as a terminal sends it.
    # Ctrl-C handled as a terminal's program has it, even where this suite runs as a
    # background job, whose shell starts it (and so the matrix) ignoring SIGINT.
    return subprocess.Popen([sys.executable, "-m", "peft_arena", *args], env=process_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process: subprocess.Popen, timeout: float = 180.0) -> tuple[str, str]:
    """Its output once it exits; if it does not, kill its group and fail with what it said."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"still running {timeout:.0f} s later:\n{out}\n{err}") from None


def wait_for(condition, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def fault_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def live_processes(group: int) -> list[int]:
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


def snapshot(results: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in store.records_dir(results).glob("*.json")}


def no_leftovers(results: Path) -> None:
    folder = store.records_dir(results)
    assert not list(folder.glob(f".*{store.TEMP_SUFFIX}"))
    for path in folder.glob("*.json"):
        json.loads(path.read_text())  # every record parses, strictly
