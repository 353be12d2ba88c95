"""Label a file of texts with an exported (or any transformers) classification model.

Input: CSV, JSONL or Parquet with a text column. Output: a CSV with `ID,label` (the label id),
plus `label_name,confidence` on request. IDs come from `--id-column`, else the row number.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peft_arena.common import progress
from peft_arena.common.errors import UserError
from peft_arena.data.files import read_table  # same formats and errors as task data
from peft_arena.model.saving import ADAPTER_CONFIG, read_metadata
from peft_arena.tools.export import load_adapter_model
from peft_arena.train.precision import resolve_precision

DEFAULT_MAX_LENGTH = 512


@dataclass
class Predictions:
    ids: list
    labels: np.ndarray  # label ids
    confidence: np.ndarray  # softmax probability of the predicted label
    label_names: list[str]

    def frame(self, with_names: bool) -> pd.DataFrame:
        frame = pd.DataFrame({"ID": self.ids, "label": self.labels})
        if with_names:
            frame["label_name"] = [self.label_names[i] for i in self.labels]
            frame["confidence"] = np.round(self.confidence, 6)
        return frame


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    label_names: list[str]
    max_length: int
    precision: str


def load_for_inference(model_dir: str | Path) -> LoadedModel:
    """An exported folder (adapter, merged or full) or any transformers classifier folder."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise UserError(f"Model folder {folder} does not exist; give a folder written by "
                        f"`peft-arena export`.")
    metadata = read_metadata(folder)
    try:
        if (folder / ADAPTER_CONFIG).exists():
            if metadata is None:
                raise UserError(f"{folder} holds an adapter without peft_arena.json; export it "
                                f"with `peft-arena export`, or merge it (--merge).")
            model = load_adapter_model(folder, metadata)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except OSError as exc:
        raise UserError(f"Could not load a model from {folder} ({str(exc).splitlines()[0]}); "
                        f"give a folder written by `peft-arena export`.") from None
    config = model.config
    names = (metadata or {}).get("label_names") or [
        str(config.id2label[i]) for i in range(config.num_labels)]
    max_length = (metadata or {}).get("max_length") or min(
        DEFAULT_MAX_LENGTH, getattr(tokenizer, "model_max_length", DEFAULT_MAX_LENGTH))
    # The precision the cell was evaluated in, so predictions match its test accuracy.
    precision = ((metadata or {}).get("spec") or {}).get("precision", "auto")
    return LoadedModel(model.eval(), tokenizer, names, int(max_length), precision)


def read_texts(path: str | Path, text_column: str, id_column: str | None) -> tuple[list[str], list]:
    frame = read_table(Path(path))
    for column in (text_column, id_column):
        if column is not None and column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise UserError(f"{path}: no column {column!r} (found: {found}); "
                            f"set --text-column/--id-column.")
    texts = frame[text_column]
    if texts.isna().any():
        raise UserError(f"{path}: {int(texts.isna().sum())} rows have no text; remove them.")
    ids = frame[id_column].tolist() if id_column else list(range(len(frame)))
    return [str(t) for t in texts], ids


@torch.inference_mode()
def predict_texts(loaded: LoadedModel, texts: list[str], batch_size: int = 128) -> Predictions:
    """Batches of similar length (less padding), results back in input order."""
    tokenizer = loaded.tokenizer
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=loaded.max_length,
                                             add_special_tokens=True)["input_ids"]]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    labels = np.empty(len(texts), dtype=np.int64)
    confidence = np.empty(len(texts), dtype=np.float64)
    device = next(loaded.model.parameters()).device
    dtype = resolve_precision(loaded.precision).compute_dtype
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    for batch in progress.track(batches, "predict"):
        encoded = tokenizer([texts[i] for i in batch], truncation=True,
                            max_length=loaded.max_length, padding=True, return_tensors="pt")
        with autocast:
            logits = loaded.model(**encoded.to(device)).logits.float()
        probs = torch.softmax(logits, dim=-1)
        top = probs.max(dim=-1)
        labels[batch] = top.indices.cpu().numpy()
        confidence[batch] = top.values.cpu().numpy()
    return Predictions([], labels, confidence, loaded.label_names)


def predict_file(model_dir: str | Path, input_file: str | Path, out_file: str | Path, *,
                 text_column: str = "text", id_column: str | None = None,
                 with_names: bool = False, batch_size: int = 128) -> Predictions:
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1.")
    texts, ids = read_texts(input_file, text_column, id_column)
    loaded = load_for_inference(model_dir)
    predictions = predict_texts(loaded, texts, batch_size)
    predictions.ids = ids
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictions.frame(with_names).to_csv(out, index=False)
    return predictions
