"""The command line as a user calls it: in a process of its own, or in this one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from peft_arena import cli


def peft_arena(*args, cwd=None, columns: int | None = None) -> subprocess.CompletedProcess:
    """`python -m peft_arena ARGS` with stdout a pipe, as in `peft-arena report | cat` or a CI
    log; `columns` sets the terminal width that rich would otherwise guess."""
    env = {**os.environ, "PEFT_ARENA_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "peft_arena", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def call_cli_streams(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                     *args) -> tuple[int, str, str]:
    """`peft-arena ARGS` in this process: the exit status, its stdout and its stderr."""
    monkeypatch.setattr(sys, "argv", ["peft-arena", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exited:
        code = exited.code
    out, err = capsys.readouterr()
    return code, out, err


def call_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             *args) -> tuple[int, str]:
    """`peft-arena ARGS` in this process: the exit status and everything it printed."""
    code, out, err = call_cli_streams(monkeypatch, capsys, *args)
    return code, out + err
