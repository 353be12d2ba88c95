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

SVDs run in float64 on the CPU. Modules whose smaller side exceeds `FULL_SVD_MAX_SIDE` (7B-
class models) would take seconds each; there the top singular vectors come from a seeded
randomized SVD (torch.svd_lowrank) and the effective rank from the top `LOWRANK_Q` singular
values, and the record says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from peft_arena.measure.retention import body_of, checkpoint_files, read_checkpoint_tensors

INTRUDER_K = 10
INTRUDER_THRESHOLD = 0.5
FULL_SVD_MAX_SIDE = 2048
LOWRANK_Q = 64
LOWRANK_SEED = 0


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


def _left_vectors(matrix: torch.Tensor, k: int | None) -> torch.Tensor:
    """Left singular vectors (columns), all of them or the top k."""
    if min(matrix.shape) > FULL_SVD_MAX_SIDE:
        torch.manual_seed(LOWRANK_SEED)
        u, _, _ = torch.svd_lowrank(matrix, q=max(k or LOWRANK_Q, LOWRANK_Q))
        return u[:, :k] if k else u
    u = torch.linalg.svd(matrix, full_matrices=False).U
    return u[:, :k] if k else u


def intruder_count(base: torch.Tensor, tuned: torch.Tensor, k: int = INTRUDER_K,
                   threshold: float = INTRUDER_THRESHOLD) -> int:
    """Top-k left singular vectors of `tuned` whose |cosine| with every left singular vector
    of `base` stays below `threshold`."""
    base_vectors = _left_vectors(base.double(), None)
    tuned_vectors = _left_vectors(tuned.double(), k)
    best = (base_vectors.T @ tuned_vectors).abs().max(dim=0).values
    return int((best < threshold).sum())


def module_figures(base: torch.Tensor, delta: torch.Tensor) -> dict[str, Any]:
    base, delta = base.double(), delta.double()
    if min(delta.shape) > FULL_SVD_MAX_SIDE:
        torch.manual_seed(LOWRANK_SEED)
        singular = torch.svd_lowrank(delta, q=LOWRANK_Q)[1]
    else:
        singular = torch.linalg.svdvals(delta)
    base_norm = float(torch.linalg.norm(base))
    delta_norm = float(torch.linalg.norm(delta))
    return {"shape": list(base.shape), "delta_norm": delta_norm, "base_norm": base_norm,
            "relative_norm": delta_norm / base_norm if base_norm > 0 else math.nan,
            "effective_rank": effective_rank(singular),
            "intruders": intruder_count(base, base + delta)}


# ---------------------------------------------------------------- the updates


def _peft_updates(model: nn.Module, skipped: dict[str, str]
                  ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    from peft.tuners.ia3.layer import IA3Layer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.integrations import dequantize_module_weight

    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        base_layer = module.get_base_layer()
        weight = getattr(base_layer, "weight", None)
        if weight is None or (weight.dim() != 2 and not hasattr(weight, "quant_state")):
            skipped[name] = f"not a 2-D linear weight ({type(base_layer).__name__})"
            continue
        adapters = [a for a in module.active_adapters
                    if a in getattr(module, module.adapter_layer_names[0], {})]
        if not adapters:
            continue
        base = dequantize_module_weight(base_layer).detach().double()
        if base.dim() != 2:
            skipped[name] = f"not a 2-D linear weight ({type(base_layer).__name__})"
            continue
        if any(getattr(module, "use_dora", {}).get(a, False) for a in adapters):
            skipped[name] = "DoRA: its magnitude vector is not in PEFT's delta weight"
            continue
        if isinstance(module, IA3Layer):
            scale = torch.ones(1, dtype=torch.float64, device=base.device)
            for adapter in adapters:
                scale = scale * module.ia3_l[adapter].detach().double()
            # (1, in) for a feed-forward module (columns), (out, 1) otherwise (rows).
            delta = base * (scale - 1)
        elif hasattr(module, "get_delta_weight"):
            delta = sum(module.get_delta_weight(a).detach().double() for a in adapters)
        else:
            skipped[name] = f"{type(module).__name__} has no delta weight"
            continue
        yield name, base, delta


def _full_updates(model: nn.Module, model_path: str, skipped: dict[str, str]
                  ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = base_model.base_model_prefix
    body = body_of(model)
    linears = {name: module for name, module in body.named_modules()
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
        tuned = module.weight.detach().double().cpu()
        base = stored.double()
        delta = tuned - base
        if torch.count_nonzero(delta) == 0:
            continue  # frozen, or not moved: no update to describe
        yield full_name, base, delta


def weight_update_section(model: nn.Module, model_path: str) -> dict[str, Any]:
    """The record's weight_update section (records.schema.WeightUpdate)."""
    import time

    started = time.perf_counter()
    skipped: dict[str, str] = {}
    is_peft = getattr(model, "peft_config", None) is not None
    updates = (_peft_updates(model, skipped) if is_peft
               else _full_updates(model, model_path, skipped))
    modules: dict[str, dict[str, Any]] = {}
    for name, base, delta in updates:
        modules[name] = module_figures(base.cpu(), delta.cpu())
    section: dict[str, Any] = {
        "source": "peft delta weights" if is_peft else "tuned minus checkpoint weights",
        "intruder_k": INTRUDER_K, "intruder_threshold": INTRUDER_THRESHOLD,
        "svd": (f"full float64 SVD; randomized (q={LOWRANK_Q}) for a side over "
                f"{FULL_SVD_MAX_SIDE}"),
        "modules": modules, "skipped": skipped,
        "summary": _summary(modules),
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
