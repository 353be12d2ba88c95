"""The memory estimate against the CPU peak above the setup baseline."""

from __future__ import annotations

import pytest
import torch

from peft_arena.cell.entry import run_cell
from peft_arena.measure.estimate_check import (
    cpu_estimate_check,
    current_rss_bytes,
    in_use_reader,
)
from tests.support.specs import tiny_spec


def test_error_is_relative_to_the_rise_above_the_baseline():
    check = cpu_estimate_check(600, peak_bytes=1500, baseline_bytes=1000)
    assert check["measured_bytes"] == 500 and check["error"] == pytest.approx(0.2)
    assert cpu_estimate_check(600, peak_bytes=900, baseline_bytes=1000) is None
    assert cpu_estimate_check(None, peak_bytes=1500, baseline_bytes=1000) is None


def test_current_rss_is_plausible():
    rss = current_rss_bytes()
    assert rss is None or 10 * 2**20 < rss < 64 * 2**30


def test_a_cpu_cell_records_its_baseline_and_the_check(tiny_llama, synth_task, data_dir):
    spec = tiny_spec(tiny_llama, synth_task, max_train_samples=64, max_eval_samples=16,
                     max_length=128, learning_rate=5e-5)
    record = run_cell(spec, data_dir)
    memory, check = record["memory"], record["memory_tools"]["estimate_check"]
    assert 0 < memory["baseline_rss_bytes"] <= memory["peak_bytes"]
    assert check["baseline_rss_bytes"] == memory["baseline_rss_bytes"]
    assert check["measured_bytes"] == memory["peak_bytes"] - memory["baseline_rss_bytes"]
    assert check["estimate_bytes"] == record["memory_tools"]["estimate"]["total_bytes"]
    assert check["error"] == pytest.approx(
        (check["estimate_bytes"] - check["measured_bytes"]) / check["measured_bytes"])


def test_in_use_error_is_relative_to_the_in_use_rise():
    check = cpu_estimate_check(600, peak_bytes=1500, baseline_bytes=1000,
                               max_in_use_bytes=1300.0, baseline_in_use_bytes=800)
    assert check["in_use_bytes"] == 500 and check["in_use_error"] == pytest.approx(0.2)
    assert check["error"] == pytest.approx(0.2)
    no_rise = cpu_estimate_check(600, peak_bytes=1500, baseline_bytes=1000,
                                 max_in_use_bytes=700.0, baseline_in_use_bytes=800)
    assert "in_use_error" not in no_rise


def test_in_use_follows_a_large_allocation():
    read = in_use_reader()
    if read is None:
        pytest.skip("no glibc mallinfo2 here: the in-use reader exists only with glibc")
    before = read()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    during = read()
    del block
    assert during - before >= 60 * 2**20
    assert read() < during - 60 * 2**20
