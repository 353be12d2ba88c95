"""The cell's retention step: the probe set, the base model on demand, and the two sections
(measure.retention, measure.weight_update) of the record.

A measurement that cannot be made (no probe texts readable, an unexpected error in a module
the measures do not know) is recorded as not measured with its reason: a trained and tested
cell is never lost to its retention figures.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from peft_arena.config.presets import resolve_model_path
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.data.loading import resolve_data_dir
from peft_arena.data.probe_texts import draw_probe_set
from peft_arena.measure.retention import retention_section
from peft_arena.measure.weight_update import weight_update_section
from peft_arena.model.loading import every_position, inference_attention, load_model
from peft_arena.records.schema import Retention, WeightUpdate
from peft_arena.train.memory_tools import base_dtype


@dataclass
class Retained:
    retention: Retention | None
    weight_update: WeightUpdate | None


def _not_measured(exc: BaseException) -> dict[str, Any]:
    return {"measured": False, "reason": f"{type(exc).__name__}: {exc}"[:500],
            "traceback": traceback.format_exc()[-2000:]}


def base_loader(spec: CellSpec, label_names: list[str], *, device: torch.device,
                dtype: torch.dtype, pad_id: int, trust_remote_code: bool = False
                ) -> Callable[[], torch.nn.Module]:
    """A function loading the base as the cell loaded it (bf16 where the strategy froze it
    in bf16), so that the two sides differ by training only."""

    def load_base() -> torch.nn.Module:
        base = load_model(spec.model, label_names, on_gpu=device.type == "cuda",
                          attention="sdpa", trust_remote_code=trust_remote_code, dtype=dtype,
                          pad_token_id=pad_id)
        return base.to(device)

    return load_base


def measure_retention(spec: CellSpec, model: torch.nn.Module, *, tokenizer: Any,
                      label_names: list[str], pad_id: int, data_dir: str | Path | None,
                      is_peft: bool, precision_name: str, trust_remote_code: bool = False
                      ) -> Retained:
    """Both sections for the trained `model` (unwrapped from any distributed wrapper)."""
    model_path = resolve_model_path(spec.model)
    device = next(model.parameters()).device
    dtype = base_dtype(is_peft, precision_name)
    try:
        probe = draw_probe_set(resolve_task(spec.task_source), resolve_data_dir(data_dir))
        with inference_attention(model):
            retention = retention_section(
                tuned=model, tokenizer=tokenizer, model_path=model_path,
                load_base_model=base_loader(spec, label_names, device=device, dtype=dtype,
                                            pad_id=pad_id, trust_remote_code=trust_remote_code),
                trained_task=spec.task, probe=probe,
                max_length=spec.max_length, dtype_name=str(dtype).removeprefix("torch."),
                # An LM head scores every position, not only the one the classification
                # head reads (all that the cell's pruned last layer computes).
                every_position=lambda: every_position(model))
    except Exception as exc:  # recorded, never fatal: see the module docstring
        retention = _not_measured(exc)
    try:
        update = weight_update_section(model, model_path)
    except Exception as exc:
        update = _not_measured(exc)
    return Retained(retention, update)  # type: ignore[arg-type]
