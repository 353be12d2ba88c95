"""The weight update a strategy made: ΔW per adapted linear module and over the whole body.

ΔW is the merged weight minus the base weight, for every 2-D linear weight of the body the
strategy changed (the classification head is new, so it has no base and is left out):

- LoRA family (LoRA, AdaLoRA, LoHa, LoKr, on a 4-bit base too): PEFT's own `get_delta_weight`,
  exactly what `merge` adds (LoRA: B·A·alpha/r; AdaLoRA: B·(A⊙E)·alpha/ranknum, its pruned
  singular values zero; DoRA's magnitude rescaling is not in it, so DoRA layers are skipped
  and named);
- IA3: its learned vector l scales the weight's rows (key, value: the output) or columns (a
  feed-forward module: the input), so ΔW = (l - 1)·W along that axis;
- full fine-tuning: the tuned weight minus the base weight read from the model's safetensors
  files (no second model is loaded).

Per module: ||ΔW||_F / ||W||_F; the effective rank of ΔW, exp of the entropy of its
normalised singular values (Roy & Vetterli, 2007); and the intruder dimensions of W + ΔW
(Shuttleworth et al., 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence",
arXiv:2410.21228): among the top `INTRUDER_K` left singular vectors of the tuned weight, those
whose largest |cosine| with every left singular vector of W is below `INTRUDER_THRESHOLD`.
The paper looks at the top k = 10 singular vectors and sweeps the threshold ε; 0.5 here is
one point of that sweep, and both numbers go into the record. Over the body: the relative
norm of all updates together, the mean and largest effective rank, and the intruders summed.

Cost (an SVD of a 384x1536 matrix takes a fifth of a second on a CPU core, and full
fine-tuning of MiniLM changes 36 such matrices): singular values of a LoRA-family update come
exactly from its factors (QR of B and A, then the SVD of an r x r core), of any other update
from the eigenvalues of its Gram matrix on the smaller side, in float64; the base weight's
singular vectors are the same for every cell of a model and are cached on disk
(`cache_root()/retention/base_vectors`); the top k singular vectors of W + ΔW come from the
float32 eigenvectors of its smaller Gram matrix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from peft_arena.config.paths import cache_root
from peft_arena.measure.retention import (
    body_of,
    checkpoint_files,
    model_stamp,
    read_checkpoint_tensors,
)

INTRUDER_K = 10
INTRUDER_THRESHOLD = 0.5
# A singular value read from a Gram matrix's eigenvalue carries an error of about
# sqrt(eps * size) of the largest one; below that it is rounding, not rank.
GRAM_RELATIVE_TOLERANCE = math.sqrt(np.finfo(np.float64).eps)
SINGLE_THREAD_MAX_SIDE = 1024


@dataclass
class Update:
    """One module's base weight W and update ΔW (float64, CPU); `factors` (left, right) with
    ΔW = left @ right where the method keeps the update low-rank."""

    name: str
    base: torch.Tensor
    delta: torch.Tensor
    factors: tuple[torch.Tensor, torch.Tensor] | None = None
    stored_dtype: str = "float32"  # of the base weight as the model holds it (cache key)


# ---------------------------------------------------------------- the figures


def effective_rank(singular_values: torch.Tensor) -> float:
    """exp(entropy) of the singular values normalised to sum 1 (Roy & Vetterli); 0 for a
    zero matrix."""
    s = singular_values.double().clamp_min(0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def singular_values(update: Update) -> torch.Tensor:
    """The singular values of ΔW: exactly from its factors, else from its Gram matrix."""
    if update.factors is not None:
        left, right = update.factors
        q_left, r_left = torch.linalg.qr(left)
        q_right, r_right = torch.linalg.qr(right.T)
        del q_left, q_right  # orthonormal: they leave the singular values as they are
        return torch.linalg.svdvals(r_left @ r_right.T)
    delta = update.delta
    gram = delta @ delta.T if delta.shape[0] <= delta.shape[1] else delta.T @ delta
    values = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)
    tolerance = GRAM_RELATIVE_TOLERANCE * math.sqrt(max(delta.shape)) * float(values[0])
    return values[values > tolerance]


def left_singular_vectors(matrix: torch.Tensor) -> torch.Tensor:
    """All left singular vectors (columns, largest singular value first) of a float64 matrix,
    from the eigenvectors of its smaller Gram matrix."""
    if matrix.shape[0] <= matrix.shape[1]:
        eigenvalues, vectors = torch.linalg.eigh(matrix @ matrix.T)
        return vectors.flip(1)
    eigenvalues, right = torch.linalg.eigh(matrix.T @ matrix)
    eigenvalues, right = eigenvalues.flip(0), right.flip(1)
    kept = eigenvalues > GRAM_RELATIVE_TOLERANCE * float(eigenvalues[0])
    return (matrix @ right[:, kept]) / eigenvalues[kept].sqrt()


def top_left_vectors(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """The top k left singular vectors, from the float32 Gram eigenvectors. Not a randomized
    SVD: where the spectrum is flat around k, its approximate vectors mix several singular
    vectors and then match no base vector well, which read as intruders that are not there
    (it found one in full fine-tuning of MiniLM that the exact vectors do not have)."""
    return left_singular_vectors(matrix.float())[:, :k]


def intruder_count(base_vectors: torch.Tensor, tuned: torch.Tensor, k: int = INTRUDER_K,
                   threshold: float = INTRUDER_THRESHOLD) -> int:
    """Top-k left singular vectors of `tuned` whose |cosine| with every left singular vector
    of the base weight (`base_vectors`, columns) stays below `threshold`."""
    tuned_vectors = top_left_vectors(tuned, k)
    best = (base_vectors.T.to(tuned_vectors.dtype) @ tuned_vectors).abs().max(dim=0).values
    return int((best < threshold).sum())


class BaseVectors:
    """The base weights' left singular vectors, cached on disk per model and module."""

    def __init__(self, model_key: str | None) -> None:
        self.folder = (cache_root() / "retention" / "base_vectors" / model_key
                       if model_key else None)
        self.hits = 0

    def get(self, name: str, base: torch.Tensor) -> torch.Tensor:
        file = (self.folder / f"{name}-{tuple(base.shape)}.npy".replace(" ", "")
                if self.folder else None)
        if file is not None and file.is_file():
            try:
                self.hits += 1
                return torch.from_numpy(np.load(file)).double()
            except (OSError, ValueError):
                self.hits -= 1
        vectors = left_singular_vectors(base)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, vectors.float().numpy())  # cosines need no more than float32
            tmp.replace(file)
        return vectors


def module_figures(update: Update, base_vectors: torch.Tensor) -> dict[str, Any]:
    base, delta = update.base, update.delta
    base_norm = float(torch.linalg.norm(base))
    delta_norm = float(torch.linalg.norm(delta))
    return {"shape": list(base.shape), "delta_norm": delta_norm, "base_norm": base_norm,
            "relative_norm": delta_norm / base_norm if base_norm > 0 else math.nan,
            "effective_rank": effective_rank(singular_values(update)),
            "intruders": intruder_count(base_vectors, base + delta)}


# ---------------------------------------------------------------- the updates


def _low_rank_factors(module: nn.Module, adapter: str, delta: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(left, right) with left @ right == ΔW for LoRA and AdaLoRA linear layers; None for
    any other layer, or where the factors do not reproduce PEFT's own delta weight."""
    lora_a, lora_b = getattr(module, "lora_A", {}), getattr(module, "lora_B", {})
    if adapter not in lora_a or adapter not in lora_b:
        return None
    a = lora_a[adapter]
    b = lora_b[adapter]
    a = (a.weight if isinstance(a, nn.Module) else a).detach().double().cpu()
    b = (b.weight if isinstance(b, nn.Module) else b).detach().double().cpu()
    if a.dim() != 2 or b.dim() != 2:
        return None
    scale = float(module.scaling[adapter])
    lora_e = getattr(module, "lora_E", {})
    if adapter in lora_e:  # AdaLoRA: B (A * E) scaling / ranknum
        a = a * lora_e[adapter].detach().double().cpu()
        scale /= float(module.ranknum[adapter]) + 1e-5
    left, right = b * scale, a
    if getattr(module, "fan_in_fan_out", False):
        left, right = right.T, left.T
    if left.shape[0] != delta.shape[0] or right.shape[1] != delta.shape[1]:
        return None
    # The factors must reproduce PEFT's delta (rounded to the adapter's dtype, ours float64):
    # checked on its first rows, which costs a sliver of the full product.
    rows = slice(0, 4)
    if not torch.allclose(left[rows] @ right, delta[rows], rtol=0,
                          atol=1e-3 * float(delta[rows].abs().max()) + 1e-30):
        return None
    return left, right


_MOVES_BASE = ("pissa", "olora", "loftq", "corda")


def _peft_updates(model: nn.Module, skipped: dict[str, str]) -> Iterator[Update]:
    from peft.tuners.ia3.layer import IA3Layer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.integrations import dequantize_module_weight

    # Initialisations that take the adapter's start out of the base weight: the stored base
    # is no longer the checkpoint's.
    moved_base = {adapter for adapter, config in getattr(model, "peft_config", {}).items()
                  if str(getattr(config, "init_lora_weights", "")).startswith(_MOVES_BASE)}
    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        base_layer = module.get_base_layer()
        if getattr(base_layer, "weight", None) is None:
            skipped[name] = f"no weight ({type(base_layer).__name__})"
            continue
        adapters = [a for a in module.active_adapters
                    if a in getattr(module, module.adapter_layer_names[0], {})]
        if not adapters:
            continue
        stored = dequantize_module_weight(base_layer).detach()
        stored_dtype = ("nf4" if getattr(base_layer.weight, "quant_state", None) is not None
                        else str(stored.dtype).removeprefix("torch."))
        base = stored.double().cpu()
        if base.dim() != 2:
            skipped[name] = f"not a 2-D linear weight ({type(base_layer).__name__})"
            continue
        if any(getattr(module, "use_dora", {}).get(a, False) for a in adapters):
            skipped[name] = "DoRA: its magnitude vector is not in PEFT's delta weight"
            continue
        if any(a in moved_base for a in adapters):
            skipped[name] = ("its initialisation changed the base weight (PiSSA, OLoRA, LoftQ, "
                             "CorDA): ΔW against the checkpoint is not PEFT's delta weight")
            continue
        factors = None
        if isinstance(module, IA3Layer):
            scale = torch.ones(1, dtype=torch.float64)
            for adapter in adapters:
                scale = scale * module.ia3_l[adapter].detach().double().cpu()
            # (1, in) for a feed-forward module (columns), (out, 1) otherwise (rows).
            delta = base * (scale - 1)
        elif hasattr(module, "get_delta_weight"):
            delta = sum(module.get_delta_weight(a).detach().double().cpu() for a in adapters)
            if len(adapters) == 1:
                factors = _low_rank_factors(module, adapters[0], delta)
        else:
            skipped[name] = f"{type(module).__name__} has no delta weight"
            continue
        yield Update(name.removeprefix("base_model.model."), base, delta, factors,
                     stored_dtype)


def _full_updates(model: nn.Module, model_path: str, skipped: dict[str, str]
                  ) -> Iterator[Update]:
    prefix = model.base_model_prefix
    linears = {name: module for name, module in body_of(model).named_modules()
               if isinstance(module, nn.Linear)}
    files = checkpoint_files(model_path)
    if not files:
        skipped["*"] = "no safetensors checkpoint on disk to read the base weights from"
        return
    candidates = {name: [f"{name}.weight", f"{prefix}.{name}.weight"] for name in linears}
    tensors = read_checkpoint_tensors(files, [c for names in candidates.values() for c in names])
    for name, module in linears.items():
        stored = next((tensors[c] for c in candidates[name] if c in tensors), None)
        full_name = f"{prefix}.{name}"
        if stored is None:
            skipped[full_name] = "not in the checkpoint"
            continue
        base = stored.double()
        delta = module.weight.detach().double().cpu() - base
        if torch.count_nonzero(delta) == 0:
            continue  # frozen, or not moved: no update to describe
        yield Update(full_name, base, delta, stored_dtype=str(stored.dtype).removeprefix(
            "torch."))


def _model_key(model_path: str, dtype: str) -> str | None:
    stamp = model_stamp(model_path)
    if not stamp[1]:
        return None  # no files to key the cache on: computed every time
    blob = json.dumps([stamp, dtype], default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def weight_update_section(model: nn.Module, model_path: str) -> dict[str, Any]:
    """The record's weight_update section (records.schema.WeightUpdate) for the trained
    classification model `model` (any PEFT wrapper)."""
    started = time.perf_counter()
    skipped: dict[str, str] = {}
    is_peft = getattr(model, "peft_config", None) is not None
    updates = (_peft_updates(model, skipped) if is_peft
               else _full_updates(model, model_path, skipped))
    modules: dict[str, dict[str, Any]] = {}
    cache: BaseVectors | None = None
    threads = torch.get_num_threads()
    try:
        for update in updates:
            if cache is None:
                cache = BaseVectors(_model_key(model_path, update.stored_dtype))
            # One thread for small matrices: on a busy 2-core machine the figures of six
            # 384-wide modules took 0.72 s with two threads and 0.23 s with one.
            torch.set_num_threads(1 if min(update.base.shape) <= SINGLE_THREAD_MAX_SIDE
                                  else threads)
            modules[update.name] = module_figures(update, cache.get(update.name, update.base))
    finally:
        torch.set_num_threads(threads)
    section: dict[str, Any] = {
        "source": "peft delta weights" if is_peft else "tuned minus checkpoint weights",
        "intruder_k": INTRUDER_K, "intruder_threshold": INTRUDER_THRESHOLD,
        "svd": ("singular values: exact from LoRA factors, else float64 Gram eigenvalues; "
                "base singular vectors: float64 Gram eigenvectors (cached); top-k of W + ΔW: "
                "float32 Gram eigenvectors"),
        "modules": modules, "skipped": skipped,
        "summary": _summary(modules),
        "base_vectors_cached": cache.hits if cache else 0,
    }
    section["seconds"] = time.perf_counter() - started
    return section


def _summary(modules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if not modules:
        return {"modules": 0}
    figures = list(modules.values())
    delta = math.sqrt(sum(m["delta_norm"] ** 2 for m in figures))
    base = math.sqrt(sum(m["base_norm"] ** 2 for m in figures))
    ranks = [m["effective_rank"] for m in figures]
    return {"modules": len(figures), "relative_norm": delta / base if base > 0 else math.nan,
            "effective_rank_mean": sum(ranks) / len(ranks), "effective_rank_max": max(ranks),
            "intruders": sum(m["intruders"] for m in figures),
            "modules_with_intruders": sum(m["intruders"] > 0 for m in figures)}
