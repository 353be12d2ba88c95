"""A run prints progress only: bitsandbytes' import-time kernel warnings stay off the terminal,
and a 4-bit cell says once per run, in a line of ours, which kernels its 4-bit weights ran on."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from peft_arena.common import library_logs
from tests.support.cli import peft_arena
from tests.support.synthetic import KEYWORDS

NOISE = ("bitsandbytes", "kernels-community", "publisher trust", "gemm_4bit")
NOTE = "4-bit weights ran on"
FUSED = "kernels-community/quantization-bitsandbytes"


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
                      "--results", tmp_path, columns=80)
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


def test_the_note_names_the_kernels_of_a_4bit_model_and_nothing_for_lora(tiny_bert,
                                                                         monkeypatch):
    import sys

    import torch

    from peft_arena.config.spec import CellSpec
    from peft_arena.model.four_bit import kernel_note
    from peft_arena.model.loading import load_model
    from peft_arena.strategies import load_strategies

    spec = CellSpec(model=str(tiny_bert), task="synth", strategy="qlora")
    models = {}
    for name in ("lora", "qlora"):
        strategy = load_strategies().get(name)(spec)
        models[name] = load_model(str(tiny_bert), KEYWORDS, on_gpu=False,
                                  **strategy.load_kwargs(torch.float32))
    assert kernel_note(models["lora"], "cpu") is None
    assert kernel_note(models["qlora"], "cuda") == "4-bit weights ran on bitsandbytes' CUDA kernels"
    # Which CPU kernels bitsandbytes has depends on the CPU (the fused one needs AVX512-BF16)
    # and on what is installed: each case is set here, so that every machine checks all three.
    cpu_ops = sys.modules["bitsandbytes.backends.cpu.ops"]
    monkeypatch.setattr(cpu_ops, "gemm_4bit_forward_kernel", object(), raising=False)
    assert kernel_note(models["qlora"], "cpu").endswith("with the fused one from " + FUSED)
    monkeypatch.setattr(cpu_ops, "gemm_4bit_forward_kernel", None)  # AVX512-BF16, not fetched
    assert kernel_note(models["qlora"], "cpu").startswith(
        f"4-bit weights ran on bitsandbytes' built-in CPU kernels: the optional fused kernel "
        f"({FUSED}) ")
    monkeypatch.delattr(cpu_ops, "gemm_4bit_forward_kernel")  # no AVX512-BF16
    assert kernel_note(models["qlora"], "cpu") == \
        "4-bit weights ran on bitsandbytes' built-in CPU kernels"
