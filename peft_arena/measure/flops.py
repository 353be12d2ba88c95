"""Training FLOPs of a cell, the machine's measured peak, and model FLOP utilisation (MFU).

Estimate, per training token (after Chowdhery et al. 2022, PaLM, appendix B, with the weight
gradients restricted to the weights that train):

    forward                   2 N     every weight takes part in one multiply-add per token
    backward, activations     2 N     gradients flow back through every layer to reach the
                                      adapters (and the head) wherever they sit
    backward, weights         2 T     only trainable weights get a gradient
    attention, fwd + bwd     12 L d n QK^T and AV: 2 x 2 n d per layer forward, twice that back

    N = non-embedding parameters that run in the forward pass, adapters included; a 4-bit
        weight counts as the values it holds; PEFT's frozen copy of a module it trains in full
        (`modules_to_save`) does not run and is left out
    T = the trainable ones among them
    L = layers, d = attention width (hidden size), n = length of the token's sequence in real
        (non-padding) tokens: padding is not model work

Summed over a sequence of n tokens the attention term is 12 L d n^2, so a cell's estimate is

    train_flops = (4 N + 2 T) x train_tokens + 12 L d x sum over trained sequences of n^2

For full fine-tuning (T = N) this is the familiar 6 N + 12 L d n per token. Left out, all small
for encoder classifiers: embedding look-ups and their sparse gradients, normalisation, softmax
and activation functions; the pooler and classifier run once per sequence but are counted per
token (under 1.5% of N for MiniLM, under 1% for base-sized models).

MFU = (train_flops / training seconds) / peak FLOP/s, where the peak is measured on this machine
with square matmuls in the precision the run computes in (bf16 under autocast, fp32, ...),
and cached in the peft-arena cache folder under a key made of the device, thread count, dtype
and torch version. Every cell measures again and the best figure stays, since other work on
the machine can only make a measurement lower; `under_load` marks a best figure taken while
the CPU looked busy.
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

from peft_arena import atomic_file
from peft_arena.config.paths import peak_flops_file
from peft_arena.measure.params import parameter_numel
from peft_arena.measure.provenance import cpu_model

PEAK_MEASURE_SECONDS = 1.5
# Once a figure is cached, a cell's fresh measurement only has to catch a better one.
PEAK_REMEASURE_SECONDS = 0.5
# Big enough to reach the kernels' steady state, small enough for ~1-2 s on a laptop CPU.
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}


@dataclass(frozen=True)
class FlopModel:
    """The shape figures the estimate needs, read off a (possibly wrapped) model."""

    non_embedding_params: int
    trainable_non_embedding_params: int
    layers: int
    attention_width: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> FlopModel:
        skipped: set[int] = set()
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                skipped.update(id(p) for p in module.parameters())
            elif isinstance(module, ModulesToSaveWrapper):
                # The original module is kept for unloading; the trained copy runs instead.
                skipped.update(id(p) for p in module.original_module.parameters())
        total = trainable = 0
        for param in model.parameters():
            if id(param) in skipped:
                continue
            count = parameter_numel(param)
            total += count
            trainable += count if param.requires_grad else 0
        config = model.config
        return cls(non_embedding_params=total, trainable_non_embedding_params=trainable,
                   layers=int(config.num_hidden_layers), attention_width=int(config.hidden_size))

    def training_flops(self, tokens: int, sum_squared_lengths: int) -> int:
        """FLOPs to train on `tokens` real tokens from sequences whose squared lengths sum to
        `sum_squared_lengths` (see the module docstring)."""
        dense = (4 * self.non_embedding_params + 2 * self.trainable_non_embedding_params) * tokens
        attention = 12 * self.layers * self.attention_width * sum_squared_lengths
        return int(dense + attention)


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


def measure_peak_flops(device: torch.device, dtype: torch.dtype,
                       seconds: float = PEAK_MEASURE_SECONDS, size: int | None = None) -> float:
    """Best FLOP/s of repeated square matmuls over about `seconds` (best, not mean: a busy
    machine can only make a timing slower, never faster)."""
    size = size or MATMUL_SIZE.get(device.type, 2048)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    repeats = 10 if device.type == "cuda" else 1  # GPU matmuls are too short to time alone

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
        best = max(best, repeats * 2 * size**3 / (time.perf_counter() - began))
    return best


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
                  "matmul_size": MATMUL_SIZE.get(device.type, 2048),
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


def compute_report(model: torch.nn.Module, *, train_tokens: int, sum_squared_lengths: int,
                   train_seconds: float, device: torch.device, dtype: torch.dtype
                   ) -> dict[str, Any]:
    """The record's `compute` section."""
    shape = FlopModel.of(model)
    train_flops = shape.training_flops(train_tokens, sum_squared_lengths)
    achieved = train_flops / train_seconds if train_seconds > 0 else None
    peak = peak_flops(device, dtype)
    return {
        "train_flops": train_flops,
        "train_flops_per_s": achieved,
        "peak_flops_per_s": peak.flops_per_s,
        "peak_source": peak.source,
        "peak_under_load": peak.under_load,
        "peak_dtype": _dtype_name(dtype),
        "mfu": achieved / peak.flops_per_s if achieved is not None else None,
        "non_embedding_params": shape.non_embedding_params,
        "trainable_non_embedding_params": shape.trainable_non_embedding_params,
    }
