"""Training FLOPs of a cell, the machine's peaks, and model FLOP utilisation (MFU).

Estimate (after Chowdhery et al. 2022, PaLM, appendix B), counted per matrix multiply that
training runs. Every linear layer with W weights (adapters included; a 4-bit weight counts
as the values it holds) costs, per row it multiplies:

    forward                   2 W
    backward, input gradient  2 W   only where its input needs a gradient
    backward, weight gradient 2 W   only where its weight trains
    attention, fwd + bwd     12 d n per token and layer: QK^T and AV, 2 x 2 n d forward,
                                    twice that backward

A row is a token for layers that run on every token and a sequence for those that run once per
sequence (BERT's pooler and classifier). Which layers run per sequence and whose input needs a
gradient is read off one short forward pass with hooks (`FlopModel.of`), so no architecture is
special-cased. Checked against `torch.utils.flop_counter` in the tests, this took out two
errors of the earlier 6 N-per-token form: the head and the pooler were counted per token, and
the first layer's projections were charged an input gradient that autograd never computes
when the embeddings are frozen (every PEFT method). Matrices outside `nn.Linear` (GPT-2's
`Conv1D`) fall back to 2 forward + 2 backward + 2 if trained, per token. Left out: embedding
look-ups, normalisation, softmax, activations and other element-wise work (IA3's scaling
included), and, where frozen embeddings leave the first layer's keys (LoRA on query and value)
or queries (IA3) without a gradient, that layer's 2 n d per token of dK or dQ.
L = layers, d = attention width (hidden size), n = the sequence's length in real (non-padding)
tokens: padding is not model work.

    train_flops = per_token x train_tokens + per_sequence x train_sequences
                  + 12 L d x sum over trained sequences of n^2

MFU = (train_flops / training seconds) / a peak, against three peaks:

- `peak_flops_per_s`: square matmuls (2048 on CPU, 8192 on GPU) in the precision the run
  computes in, the best over repeated runs, cached in the peft-arena cache folder under a key
  made of the device, thread count, dtype and torch version. Every cell measures again and the
  best figure stays, since other work on the machine can only make a measurement lower;
  `under_load` marks a best figure taken while the CPU looked busy. `peaks` holds the figure
  for every precision the device has, so a reader can tell what bf16 would have given.
- `model_gemm_flops_per_s`: the same kind of measurement at the model's own matmul shapes (a
  training batch's mean tokens by each linear layer's in x out features, weighted by their
  share of the FLOPs): the ceiling this model can reach on this machine, which small hidden
  sizes keep well below the square-matmul peak.
- `datasheet_flops_per_s` (GPUs only): the vendor's dense figure for the device, the one MFU is
  usually quoted against (`DATASHEET_TFLOPS`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft.utils.other import ModulesToSaveWrapper

from peft_arena.common import atomic_file
from peft_arena.common.cpu_features import cpu_model
from peft_arena.config.paths import peak_flops_file
from peft_arena.measure.params import parameter_numel

PEAK_MEASURE_SECONDS = 1.5
# Once a figure is cached, a cell's fresh measurement only has to catch a better one.
PEAK_REMEASURE_SECONDS = 0.3
# Big enough to reach the kernels' steady state, small enough for ~1-2 s on a laptop CPU.
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}


# Tokens in the probe pass that finds out how each linear layer runs.
PROBE_LENGTH = 4


@dataclass(frozen=True)
class LinearCall:
    """One call of a linear layer in a forward pass, as the FLOP estimate needs it."""

    in_features: int
    out_features: int
    weights: int  # values the weight holds (a 4-bit one unpacked)
    trains: bool
    input_needs_grad: bool
    per_token: bool  # False: runs once per sequence (a head on the pooled output)

    @property
    def training_flops(self) -> int:
        """FLOPs per row: forward, then the backward products autograd really computes."""
        return 2 * self.weights * (1 + self.input_needs_grad + self.trains)


@dataclass(frozen=True)
class FlopModel:
    """The figures the estimate needs, read off a (possibly wrapped) model."""

    non_embedding_params: int
    trainable_non_embedding_params: int
    layers: int
    attention_width: int
    attention_layers: int  # layers whose attention is n x n (the others: one query row)
    per_token_flops: int
    per_sequence_flops: int
    # (in, out) features of the per-token linear layers, with their share of per_token_flops.
    gemm_shares: tuple[tuple[int, int, float], ...] = ()

    @classmethod
    def of(cls, model: torch.nn.Module) -> FlopModel:
        skipped: set[int] = set()
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                skipped.update(id(p) for p in module.parameters())
            elif isinstance(module, ModulesToSaveWrapper):
                # The original module is kept for unloading; the trained copy runs instead.
                skipped.update(id(p) for p in module.original_module.parameters())
        calls, probed = probe_linear_calls(model)
        total = trainable = unprobed_flops = 0
        for param in model.parameters():
            if id(param) in skipped:
                continue
            count = parameter_numel(param)
            total += count
            trainable += count if param.requires_grad else 0
            # A matrix outside nn.Linear; IA3's (n, 1) scaling vectors are element-wise.
            if id(param) not in probed and sum(size > 1 for size in param.shape) >= 2:
                unprobed_flops += 2 * count * (2 + param.requires_grad)
        # A layer computing the first token only attends with one query: 12 x width FLOPs
        # a token (QK and AV, forward and backward) instead of the n x n term below.
        one_row_layers = sum(bool(getattr(m, "first_token_only", False))
                             for m in model.modules())
        width = int(model.config.hidden_size)
        per_token = (sum(c.training_flops for c in calls if c.per_token) + unprobed_flops
                     + 12 * width * one_row_layers)
        per_sequence = sum(c.training_flops for c in calls if not c.per_token)
        shares: dict[tuple[int, int], int] = {}
        for call in calls:
            if call.per_token:
                key = (call.in_features, call.out_features)
                shares[key] = shares.get(key, 0) + call.training_flops
        config = model.config
        ranked = sorted(shares.items(), key=lambda kv: -kv[1])
        return cls(non_embedding_params=total, trainable_non_embedding_params=trainable,
                   layers=int(config.num_hidden_layers), attention_width=width,
                   attention_layers=int(config.num_hidden_layers) - one_row_layers,
                   per_token_flops=per_token, per_sequence_flops=per_sequence,
                   gemm_shares=tuple((i, o, f / max(per_token, 1)) for (i, o), f in ranked))

    def training_flops(self, tokens: int, sum_squared_lengths: int, sequences: int) -> int:
        """FLOPs to train on `sequences` sequences holding `tokens` real tokens, whose squared
        lengths sum to `sum_squared_lengths` (see the module docstring)."""
        attention = 12 * self.attention_layers * self.attention_width * sum_squared_lengths
        return int(self.per_token_flops * tokens + self.per_sequence_flops * sequences
                   + attention)


def probe_linear_calls(model: torch.nn.Module) -> tuple[list[LinearCall], set[int]]:
    """Every linear layer call of one short forward pass (batch 1, `PROBE_LENGTH` tokens),
    and the ids of the weights they cover. Evaluation mode, so no dropout draws a random
    number; nothing is trained or kept."""
    calls: list[LinearCall] = []

    def record(module: torch.nn.Linear, args: tuple, _output: Any) -> None:
        x = args[0]
        calls.append(LinearCall(
            in_features=module.in_features, out_features=module.out_features,
            weights=parameter_numel(module.weight), trains=module.weight.requires_grad,
            input_needs_grad=x.requires_grad,
            # A 3-D input of one position in a PROBE_LENGTH pass: a layer that computes the
            # first token only (model/first_token.py), i.e. once per sequence.
            per_token=x.dim() >= 3 and x.shape[-2] > 1))

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    handles = [m.register_forward_hook(record) for m in linears]
    device = next(model.parameters()).device
    config = model.config
    # Any id but the pad token: a decoder head looks for the last non-pad token.
    token = 2 if getattr(config, "pad_token_id", None) == 1 else 1
    ids = torch.full((1, PROBE_LENGTH), token, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return calls, {id(m.weight) for m in linears}


def trained_sum_squared_lengths(lengths: np.ndarray, sequences_trained: int) -> int:
    """Sum of n^2 over the sequences training saw: every epoch sees the whole split, so scale
    the split's own sum by how many splits' worth of sequences were trained on."""
    if len(lengths) == 0:
        return 0
    per_split = int(np.sum(np.asarray(lengths, dtype=np.int64) ** 2))
    return round(per_split * sequences_trained / len(lengths))


# ------------------------------------------------------------------ peak


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(
        dtype, str(dtype).removeprefix("torch."))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def peak_key(device: torch.device, dtype: torch.dtype) -> str:
    """What a peak figure depends on; a different value of any part means measuring again."""
    return (f"{_device_name(device)} | {device.type} | {torch.get_num_threads()} threads | "
            f"{_dtype_name(dtype)} | torch {torch.__version__}")


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int],
                         seconds: float) -> float:
    """Best FLOP/s of repeated (m x k) @ (k x n) matmuls over about `seconds` (best, not mean:
    a busy machine can only make a timing slower, never faster)."""
    m, k, n = shape
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(k, n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    flops = 2 * m * k * n
    # Short matmuls are timed in runs, so that timer and launch overheads do not count.
    repeats = max(1, min(100, int(2e9 // flops))) if device.type == "cpu" else 10

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b, out=out)  # warm-up: kernel selection, thread pool start
    synchronize()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        began = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        synchronize()
        best = max(best, repeats * flops / (time.perf_counter() - began))
    return best


def measure_peak_flops(device: torch.device, dtype: torch.dtype,
                       seconds: float = PEAK_MEASURE_SECONDS, size: int | None = None) -> float:
    """Best FLOP/s of repeated square matmuls over about `seconds`."""
    size = size or fitting_matmul_size(device, dtype)
    return measure_matmul_flops(device, dtype, (size, size, size), seconds)


def fitting_matmul_size(device: torch.device, dtype: torch.dtype) -> int:
    """The peak's matmul size: `MATMUL_SIZE`, halved only while one matmul would take longer
    than a whole first measurement (`PEAK_MEASURE_SECONDS`).

    A precision the CPU only emulates (bf16 on an AVX2-only core: 0.3 GFLOP/s on a 2-core
    AMD EPYC) would spend about a minute on one 2048-square matmul; its peak is measured on a
    smaller one instead, which understates nothing that matters: it is far too slow to use.
    The bound does not depend on how long a measurement may run, so a short re-measurement
    uses the same size as the cached figure it tries to beat."""
    size = MATMUL_SIZE.get(device.type, 2048)
    if device.type != "cpu":
        return size
    probe = 256
    a = torch.ones(probe, probe, dtype=dtype)
    torch.mm(a, a)  # warm-up
    began = time.perf_counter()
    torch.mm(a, a)
    probe_seconds = time.perf_counter() - began
    while size > probe and probe_seconds * (size / probe) ** 3 > PEAK_MEASURE_SECONDS:
        size //= 2
    return size


def peak_method(device: torch.device) -> str:
    size = MATMUL_SIZE.get(device.type, 2048)
    return (f"best of repeated {size}x{size} @ {size}x{size} matmuls (smaller for a precision "
            "too slow to run one in the time), cached best ever")


# Linear-layer shapes below this share of the FLOPs are not worth measuring (LoRA's rank-8
# matrices): the ceiling is weighted by FLOPs, so they barely move it.
MIN_GEMM_SHARE = 0.01
GEMM_MEASURE_SECONDS = 0.1


def model_gemm_flops(shape: FlopModel, rows: int, device: torch.device, dtype: torch.dtype,
                     seconds: float = GEMM_MEASURE_SECONDS) -> float | None:
    """The matmul rate at the model's own shapes: `rows` (a batch's tokens) by each per-token
    linear layer's in x out features, as a FLOP-weighted mean (total FLOPs over total time)."""
    shares = [(i, o, f) for i, o, f in shape.gemm_shares if f >= MIN_GEMM_SHARE]
    if not shares or rows < 1:
        return None
    seconds_per_flop = sum(f / measure_matmul_flops(device, dtype, (rows, i, o), seconds)
                           for i, o, f in shares)
    return sum(f for *_, f in shares) / seconds_per_flop


# Vendor datasheet peaks, dense (no structured sparsity), in TFLOP/s: (bf16, fp16, fp32).
# fp16/bf16 are tensor-core figures with fp32 accumulation; fp32 is the plain (non-TF32) rate.
# Matched against torch.cuda.get_device_name() in order, first match wins (A100 before A10).
DATASHEET_TFLOPS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): SXM 1,979 bf16/fp16 with
    # sparsity, 67 fp32; NVL 1,671 with sparsity, 60 fp32.
    ("H200 NVL", (835.5, 835.5, 60.0)),
    ("H200", (989.5, 989.5, 67.0)),
    # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100): SXM 1,979 with sparsity, 67
    # fp32; PCIe 1,513 with sparsity, 51 fp32.
    ("H100 PCIe", (756.5, 756.5, 51.0)),
    ("H100", (989.5, 989.5, 67.0)),
    # NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100): 312 bf16/fp16, 19.5 fp32.
    ("A100", (312.0, 312.0, 19.5)),
    # NVIDIA L4 datasheet (nvidia.com/en-us/data-center/l4): 242 with sparsity, 30.3 fp32.
    ("L4 ", (121.0, 121.0, 30.3)),  # not the L40 or L40S
    # NVIDIA A10 datasheet (nvidia.com/en-us/data-center/products/a10-gpu): 125 bf16/fp16,
    # 31.2 fp32. The A10G (AWS) has no public NVIDIA datasheet and is not matched by "A10 ".
    ("A10 ", (125.0, 125.0, 31.2)),
    # NVIDIA Ada Lovelace architecture whitepaper, appendix A (RTX 4090): 165.2 fp16/bf16
    # tensor with fp32 accumulate, 82.6 fp32.
    ("RTX 4090", (165.2, 165.2, 82.6)),
)


def datasheet_flops(device_name: str, dtype: torch.dtype) -> float | None:
    """The vendor's dense peak for a known GPU in `dtype`, in FLOP/s; None if unknown."""
    column = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}.get(dtype)
    if column is None:
        return None
    padded = f"{device_name} "  # so that "A10 " matches "NVIDIA A10" but not "NVIDIA A100"
    for name, figures in DATASHEET_TFLOPS:
        if name in padded:
            return figures[column] * 1e12
    return None


def _read_peak_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: measure again
    return data if isinstance(data, dict) else {}


def cpu_busy() -> bool:
    """Whether other work competes for the CPU: over the last minute more tasks were runnable
    than 1.5 per core (the cell's own threads count too, hence the margin)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform: nobody can tell
        return False
    return load > 1.5 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Peak:
    flops_per_s: float
    source: str  # "measured": by this process | "cached": an earlier measurement
    under_load: bool  # the best figure so far came from a busy CPU: it may be too low


def _stored_peak(path: Path, key: str) -> tuple[float, dict[str, Any]]:
    entry = _read_peak_cache(path).get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("flops_per_s"), (int, float)):
        return 0.0, {}
    return float(entry["flops_per_s"]), entry


def _store_peak(path: Path, key: str, device: torch.device, flops_per_s: float,
                under_load: bool) -> None:
    cache = _read_peak_cache(path)  # re-read: another cell may have added its own key
    cache[key] = {"flops_per_s": flops_per_s, "under_load": under_load,
                  "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_file.write_json(path, cache)


def peak_flops(device: torch.device, dtype: torch.dtype) -> Peak:
    """The machine's peak for `dtype`: the best figure ever measured with this key.

    Load can only make a timing slower, and no load test catches every busy moment (a
    1-minute load average lags a burst), so every cell measures again (1.5 s the first time, then
    0.5 s, at the end of its run) and the cache keeps the best. A first figure measured under load
    overstates MFU only until a quieter cell measures.
    """
    path = peak_flops_file()
    key = peak_key(device, dtype)
    cached, entry = _stored_peak(path, key)
    under_load = device.type == "cpu" and cpu_busy()
    measured = measure_peak_flops(
        device, dtype, PEAK_REMEASURE_SECONDS if cached > 0 else PEAK_MEASURE_SECONDS)
    if measured <= cached:
        return Peak(cached, "cached", under_load=bool(entry.get("under_load", False)))
    _store_peak(path, key, device, measured, under_load)
    return Peak(measured, "measured", under_load)


def known_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The cached peak for `dtype`, measured (and cached) only when there is none yet."""
    path = peak_flops_file()
    key = peak_key(device, dtype)
    cached, _ = _stored_peak(path, key)
    if cached > 0:
        return cached
    measured = measure_peak_flops(device, dtype)
    _store_peak(path, key, device, measured, device.type == "cpu" and cpu_busy())
    return measured


def precision_peaks(device: torch.device) -> dict[str, float]:
    """The cached peak of every precision the device computes in, measured where missing."""
    dtypes = [torch.float32, torch.bfloat16]
    if device.type == "cuda":
        dtypes.append(torch.float16)
    return {_dtype_name(dtype): known_peak_flops(device, dtype) for dtype in dtypes}


def _ratio(achieved: float | None, peak: float | None) -> float | None:
    return achieved / peak if achieved is not None and peak else None


def compute_report(model: torch.nn.Module, *, train_tokens: int, sum_squared_lengths: int,
                   train_sequences: int, batch_size: int, train_seconds: float,
                   device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The record's `compute` section."""
    shape = FlopModel.of(model)
    train_flops = shape.training_flops(train_tokens, sum_squared_lengths, train_sequences)
    achieved = train_flops / train_seconds if train_seconds > 0 else None
    peak = peak_flops(device, dtype)
    batches = -(-train_sequences // batch_size) if train_sequences else 0
    rows = round(train_tokens / batches) if batches else 0
    ceiling = model_gemm_flops(shape, rows, device, dtype)
    datasheet = datasheet_flops(_device_name(device), dtype) if device.type == "cuda" else None
    return {
        "train_flops": train_flops,
        # model/first_token.py: the work the cell did, not the unpruned model's
        "first_token_last_layer": shape.attention_layers < shape.layers,
        "train_flops_per_s": achieved,
        "peak_flops_per_s": peak.flops_per_s,
        "peak_source": peak.source,
        "peak_under_load": peak.under_load,
        "peak_dtype": _dtype_name(dtype),
        "peak_method": peak_method(device),
        "peaks": precision_peaks(device),
        "mfu": _ratio(achieved, peak.flops_per_s),
        "model_gemm_flops_per_s": ceiling,
        "model_gemm_rows": rows,
        "mfu_model_gemm": _ratio(achieved, ceiling),
        "datasheet_flops_per_s": datasheet,
        "mfu_datasheet": _ratio(achieved, datasheet),
        "non_embedding_params": shape.non_embedding_params,
        "trainable_non_embedding_params": shape.trainable_non_embedding_params,
        "per_token_flops": shape.per_token_flops,
        "per_sequence_flops": shape.per_sequence_flops,
    }
