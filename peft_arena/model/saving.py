"""Keep a cell's trained weights: RESULTS/models/<cell id>/ holds the adapter in PEFT format
(or, for full fine-tuning, the whole model), the tokenizer and `peft_arena.json` (the cell's
spec and label names), which is what `peft-arena export` and `predict` read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec

MODELS_SUBDIR = "models"
METADATA_FILE = "peft_arena.json"
ADAPTER_CONFIG = "adapter_config.json"


def saved_model_dir(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / MODELS_SUBDIR / cell_id


def save_trained_model(model: torch.nn.Module, tokenizer: Any, spec: CellSpec,
                       label_names: list[str], folder: Path) -> None:
    """What export needs later. `save_pretrained` writes only the adapter (and the trained
    head) for a PEFT model, and the whole model for full fine-tuning."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    kind = "adapter" if (folder / ADAPTER_CONFIG).exists() else "full"
    write_metadata(folder, spec, label_names, kind)


def write_metadata(folder: Path, spec: CellSpec, label_names: list[str], kind: str) -> None:
    metadata = {"kind": kind, "cell_id": spec.cell_id, "label_names": label_names,
                "max_length": spec.max_length, "spec": spec.to_dict()}
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def read_metadata(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is damaged; export the model again.") from None
