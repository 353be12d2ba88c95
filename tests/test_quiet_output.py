"""A run prints progress only: bitsandbytes' import-time kernel warnings stay off the terminal,
and a 4-bit cell says once per run, in a line of ours, which kernels its 4-bit weights ran on."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from peft_arena import library_logs
from tests.test_output import peft_arena

NOISE = ("bitsandbytes", "kernels-community", "publisher trust", "gemm_4bit")
NOTE = "4-bit weights ran on"


def _cell_blocks(output: str) -> dict[str, list[str]]:
    """The lines printed after each cell's `[i/n] task · strategy · seed s` header."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("[") and " · " in line:
            current = line.split("] ", 1)[1]
            blocks.setdefault(current, [])
        elif current is not None:
            blocks[current].append(line)
    return blocks


@pytest.mark.slow  # four cell processes: about a minute on 2 cores
def test_lora_cell_prints_no_bitsandbytes_line_and_qlora_one_of_ours(tiny_bert, synth_task,
                                                                      tmp_path):
    done = peft_arena("run", "--matrix", synth_task, "--model", tiny_bert,
                      "--strategies", "lora,qlora", "--seeds", "0,1",
                      "--max-train-samples", 30, "--max-eval-samples", 12, "--epochs", 1,
                      "--results", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    blocks = _cell_blocks(done.stdout)
    assert len(blocks) == 4, done.stdout
    # The raw warnings nowhere, not even from the driver process (it imports PEFT too).
    assert not [line for line in output.splitlines()
                if any(word in line for word in NOISE) and NOTE not in line], output
    for name, lines in blocks.items():
        notes = [line for line in lines if NOTE in line]
        # Our note once per run: after the first 4-bit cell, never for a LoRA cell.
        expected = 1 if name == "synth · qlora · seed 0" else 0
        assert len(notes) == expected, (name, output)
    assert done.stderr.strip() == "", done.stderr


def test_the_kernel_warnings_are_captured_not_emitted(caplog, monkeypatch):
    library_logs.install()
    monkeypatch.setattr(library_logs, "captured", [])  # what this process captured stays
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    before = len(library_logs.captured)
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "x")
        logger.warning("another bitsandbytes warning")  # not ours to hide
    assert library_logs.captured[before:] == [
        "Failed to load CPU gemm_4bit_forward from kernels-community: x."]
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_the_run_prints_a_note_once_however_many_cells_have_it(capsys):
    from peft_arena.cli import _print_event

    def outcome(seed: int, note: str | None):
        resolved = {"four_bit_kernel": note} if note else {}
        return SimpleNamespace(
            spec=SimpleNamespace(task="t", strategy="qlora", seed=seed), status="ok",
            seconds=1.0, record={"metrics": {"accuracy": 0.5, "macro_f1": 0.5},
                                 "resolved": resolved})

    shown: set[str] = set()
    for seed, note in enumerate(["4-bit weights ran on A", None, "4-bit weights ran on A",
                                 "4-bit weights ran on B"]):
        _print_event("end", seed + 1, 4, outcome(seed, note), notes_shown=shown)
    printed = [line.strip() for line in capsys.readouterr().out.splitlines() if NOTE in line]
    assert printed == ["4-bit weights ran on A", "4-bit weights ran on B"]
