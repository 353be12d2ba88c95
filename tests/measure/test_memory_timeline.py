"""Memory over time: the sampler sees a planted allocation where and for as long as it was
held, the compact series keeps peaks, and the statistics are those of the samples."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from peft_arena.measure.memory import GpuMemoryPoller
from peft_arena.measure.memory_timeline import MemoryTimeline, compact_series, rss_reader
from peft_arena.measure.timing import PhaseTimer
from tests.support.fake_nvml import OWN, GrowingNvml

MIB = 1024**2
PLANTED_MIB = 128
HOLD_S = 0.6
INTERVAL_S = 0.01


@pytest.mark.skipif(rss_reader() is None, reason="no way to read resident memory here "
                    "(neither /proc/self/statm nor psutil)")
def test_series_reproduces_a_planted_allocation() -> None:
    """A 128 MiB tensor (every page written, so resident) held for 0.6 s between two quiet
    phases. Writing the pages takes a while on a busy machine (0.2-0.8 s for 256 MiB here), so
    the times are taken on the sampler's own clock: when the allocation starts, when it is
    filled and when it is freed. Tolerances: the held phase's peak over the quiet baseline
    within ±10% of 128 MiB (the allocator and the interpreter move a few MiB); the samples
    above half of it start between the allocation's start and its end of filling, and end at
    the free, each within 0.1 s (the sampler runs every 10 ms, but a busy machine may delay a
    thread's wake-up by tens of milliseconds)."""
    timer = PhaseTimer()
    with MemoryTimeline(timer, interval_s=INTERVAL_S, max_points=100_000) as timeline:
        with timer.phase("before"):
            time.sleep(0.3)
        with timer.phase("hold"):
            allocated_at = time.perf_counter() - timeline.started_at
            planted = torch.ones(PLANTED_MIB * MIB // 4, dtype=torch.float32)
            filled_at = time.perf_counter() - timeline.started_at
            time.sleep(HOLD_S)
            del planted  # a block this large goes back to the system at once (mmap)
            freed_at = time.perf_counter() - timeline.started_at
        with timer.phase("after"):
            time.sleep(0.3)
    report = timeline.report()
    assert report is not None and report["primary"] == "rss_bytes"
    series = report["series"]
    t_s, rss = np.array(series["t_s"]), np.array(series["rss_bytes"], dtype=float)
    phases = np.array(series["phase"])
    baseline = np.median(rss[phases == "before"])
    held_peak = report["phases"]["hold"]["rss_bytes"]["max"]
    assert held_peak - baseline == pytest.approx(PLANTED_MIB * MIB, rel=0.10)
    held = t_s[rss > baseline + 0.5 * PLANTED_MIB * MIB]
    assert allocated_at - 0.1 <= held.min() <= filled_at + 0.1
    assert held.max() == pytest.approx(freed_at, abs=0.1)
    assert freed_at - filled_at >= HOLD_S
    # Freed again: the quiet phase after it is back near the baseline.
    assert np.median(rss[phases == "after"]) - baseline < PLANTED_MIB * MIB * 0.1
    assert report["stats"]["rss_bytes"]["max"] == held_peak


def test_compact_series_keeps_the_peak_of_every_bucket() -> None:
    t_s = np.arange(10_000) * 0.01
    values = np.full(10_000, 100.0)
    values[5_003] = 900.0  # one sample out of 10,000
    phases = ["train"] * 5_000 + ["eval"] * 5_000
    series = compact_series(t_s, phases, {"rss_bytes": values}, max_points=50)
    assert len(series["t_s"]) == len(series["rss_bytes"]) == len(series["phase"]) == 50
    assert max(series["rss_bytes"]) == 900
    assert series["rss_bytes"].count(900) == 1
    assert series["phase"][0] == "train" and series["phase"][-1] == "eval"
    assert series["t_s"] == sorted(series["t_s"])


def test_statistics_are_of_every_sample_per_phase() -> None:
    """Readers and a clock injected: the sampler's bookkeeping checked by hand."""
    timer = PhaseTimer()
    readings = iter([10, 20, 30, 40, 1000])
    timeline = MemoryTimeline(timer, readers={"rss_bytes": lambda: next(readings)},
                              clock=iter(range(100)).__next__, max_points=3)
    timeline.sample()
    timeline.sample()
    with timer.phase("train"):
        timeline.sample()
        timeline.sample()
        timeline.sample()
    report = timeline.report()
    assert report["samples"] == 5
    assert report["phases"]["setup"] == {
        "samples": 2, "rss_bytes": {"max": 20.0, "mean": 15.0, "p99": pytest.approx(19.9)}}
    assert report["phases"]["train"]["rss_bytes"]["max"] == 1000.0
    assert report["stats"]["rss_bytes"]["mean"] == pytest.approx(220.0)
    assert report["stats"]["rss_bytes"]["p99"] == pytest.approx(np.percentile(
        [10, 20, 30, 40, 1000], 99))
    assert len(report["series"]["t_s"]) == 3 and max(report["series"]["rss_bytes"]) == 1000


def test_nothing_to_read_is_no_timeline() -> None:
    with MemoryTimeline(PhaseTimer(), readers={}) as timeline:
        pass
    assert timeline.report() is None


def test_a_failing_reader_stops_sampling_and_says_why() -> None:
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) > 2:
            raise OSError("device gone")
        return 5

    with MemoryTimeline(PhaseTimer(), readers={"device_bytes": flaky},
                        interval_s=0.005) as timeline:
        time.sleep(0.1)
    report = timeline.report()
    assert report["error"] == "OSError: device gone"
    assert report["samples"] == 2


def test_on_a_gpu_the_device_memory_comes_from_the_cells_poller() -> None:
    """The poller's NVML handle is read (a stand-in growing one GiB a reading); device memory
    is then the metric the report's percentiles are of."""
    nvml = GrowingNvml(0, {})
    poller = GpuMemoryPoller(0, nvml=nvml, own_pid=OWN)
    timer = PhaseTimer()
    timeline = MemoryTimeline(timer, poller=poller)
    reads = nvml.reads
    for _ in range(3):
        timeline.sample()
    report = timeline.report()
    assert nvml.reads == reads + 3
    assert report["primary"] == "device_bytes"
    device = report["series"]["device_bytes"]
    assert np.diff(device).tolist() == [2**30, 2**30]
    assert report["stats"]["device_bytes"]["max"] == device[-1]
    assert "rss_bytes" in report["stats"] or rss_reader() is None
