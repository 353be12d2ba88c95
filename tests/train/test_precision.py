"""`--precision auto` on a CPU: bf16 only where its matmuls are measured to be faster."""

from __future__ import annotations

import pytest
import torch

from peft_arena.train import precision


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    precision.cpu_bf16_pays.cache_clear()
    yield
    precision.cpu_bf16_pays.cache_clear()


def _machine(monkeypatch, flags: set[str], bf16: float, fp32: float) -> list[torch.dtype]:
    asked: list[torch.dtype] = []

    def peak(device, dtype):
        asked.append(dtype)
        return {torch.bfloat16: bf16, torch.float32: fp32}[dtype]

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision, "known_peak_flops", peak)
    return asked


def test_auto_takes_bf16_where_it_is_measured_faster(cpu_only, monkeypatch):
    _machine(monkeypatch, {"avx512_bf16", "amx_bf16"}, bf16=1.5e12, fp32=3.2e11)
    assert precision.resolve_precision("auto").name == "bf16"


def test_auto_keeps_fp32_where_bf16_instructions_are_slower(cpu_only, monkeypatch):
    # AVX512-BF16 without AMX: bf16 matmuls at half the fp32 rate.
    _machine(monkeypatch, {"avx512_bf16"}, bf16=1.63e11, fp32=3.21e11)
    assert precision.resolve_precision("auto").name == "fp32"


def test_auto_keeps_fp32_when_bf16_gains_too_little(cpu_only, monkeypatch):
    _machine(monkeypatch, {"avx512_bf16"}, bf16=1.1e11, fp32=1.0e11)
    assert precision.resolve_precision("auto").name == "fp32"


def test_no_measurement_without_bf16_instructions(cpu_only, monkeypatch):
    asked = _machine(monkeypatch, {"avx2", "fma"}, bf16=9e12, fp32=1e11)
    assert precision.resolve_precision("auto").name == "fp32"
    assert asked == []


def test_explicit_precision_is_kept(cpu_only, monkeypatch):
    asked = _machine(monkeypatch, {"avx512_bf16"}, bf16=1e11, fp32=3e11)
    assert precision.resolve_precision("bf16").name == "bf16"
    assert asked == []


def test_known_peak_is_measured_once_then_read(monkeypatch, tmp_path):
    from peft_arena.measure import flops

    monkeypatch.setenv("PEFT_ARENA_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(flops, "measure_peak_flops",
                        lambda device, dtype, *a, **k: calls.append(dtype) or 2.5e11)
    cpu = torch.device("cpu")
    assert flops.known_peak_flops(cpu, torch.float32) == 2.5e11
    assert flops.known_peak_flops(cpu, torch.float32) == 2.5e11
    assert calls == [torch.float32]
