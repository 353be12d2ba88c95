"""Export a cell's saved weights (see model.saving) as a model other tools can load:

    adapter  PEFT adapter + tokenizer. transformers loads it on top of its base model:
             AutoModelForSequenceClassification.from_pretrained(DIR, id2label=...)
             (the label names are in DIR/peft_arena.json), or `peft-arena predict`.
    merged   the adapter folded into the base (`merge_and_unload`): a plain transformers
             model with id2label in its config; from_pretrained(DIR) needs nothing else.

A QLoRA adapter is merged into a de-quantized full-precision copy of its 4-bit base, never into
the 4-bit weights: rounding the merged weights back to 4 bits would change the outputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.model.four_bit import keep_training_layout
from peft_arena.model.loading import load_model, load_tokenizer
from peft_arena.model.saving import read_metadata, saved_model_dir, write_metadata
from peft_arena.records.store import read_record, results_dir_of
from peft_arena.strategies import load_strategies


def load_adapter_model(folder: Path, metadata: dict[str, Any], *,
                       dequantize: bool = False) -> torch.nn.Module:
    """The base model loaded as the cell loaded it, with the saved adapter on top.

    With `dequantize`, a quantized base (QLoRA) is turned back into full-precision weights
    first, so that the adapter can be merged into it.
    """
    from peft import PeftModel

    spec = CellSpec.from_dict(metadata["spec"])
    strategy = load_strategies().get(spec.strategy)(spec)
    # The cell seeded before loading; seeding again gives any weights the checkpoint lacks
    # (a head, a pooler) the same initial values, though the adapter normally carries them.
    set_seed(spec.seed)
    base = load_model(spec.model, metadata["label_names"], on_gpu=False,
                      **strategy.load_kwargs(torch.float32))
    if dequantize and getattr(base, "hf_quantizer", None) is not None:
        base = base.dequantize()
    # The cell evaluated in the training layout too: keeping it keeps the outputs the same.
    keep_training_layout(base)
    return PeftModel.from_pretrained(base, folder)


def export_model(record_file: str | Path, out_dir: str | Path, *, merge: bool = False) -> str:
    """Export a recorded cell's saved weights to `out_dir`; returns the kind written."""
    record_file, out = Path(record_file), Path(out_dir)
    record = read_record(record_file) if record_file.is_file() else None
    if record is None:
        raise UserError(f"{record_file} is not a peft-arena record; give a file from "
                        f"RESULTS/records/.")
    if record.get("status") != "ok":
        raise UserError(f"Cell {record['cell_id']} failed; only finished cells can be exported.")
    saved = saved_model_dir(results_dir_of(record_file), record["cell_id"])
    metadata = read_metadata(saved)
    if metadata is None:
        raise UserError(
            f"No saved weights for cell {record['cell_id']} in {saved}; delete its record and "
            f"run it again with --save-model."
        )
    if out.exists() and any(out.iterdir()):
        raise UserError(f"Output folder {out} is not empty; choose a new --out folder.")
    spec = CellSpec.from_dict(metadata["spec"])
    if metadata["kind"] == "full" or not merge:
        # The saved folder already is the export: a full model, or the adapter as PEFT wrote it.
        shutil.copytree(saved, out, dirs_exist_ok=True)
        return metadata["kind"]
    adapted = load_adapter_model(saved, metadata, dequantize=True)
    if adapted.active_peft_config.is_prompt_learning:
        raise UserError(f"Cell {record['cell_id']} trained {spec.strategy}, a learned prompt with "
                        f"no weights to merge into; export it without --merge.")
    merged = adapted.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    load_tokenizer(str(saved)).save_pretrained(out)
    write_metadata(out, spec, metadata["label_names"], "merged")
    return "merged"
