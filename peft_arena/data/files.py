"""Reading a data file with its values as written: JSONL, CSV or Parquet, with one-line errors
that name the file. Task data (data/loading.py) and `predict` read through it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from peft_arena.common.errors import UserError

FORMATS = ("jsonl", "csv", "parquet")


def _read_jsonl(path: Path) -> pd.DataFrame:
    # The json module, not pandas: pandas turns a column of 1 and null (or 1 and 1.0) into
    # floats, and the checks below must see the values as written. It is faster, too.
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {number} is not valid JSON ({exc.msg}); "
                                f"fix the file.") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {number} is not a JSON object; write one "
                                f"object per line, e.g. {{\"text\": ..., \"label\": ...}}.")
            rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def read_table(path: Path) -> pd.DataFrame:
    """A data file with its values as written: CSV cells as text (empty cells as ""), JSONL
    and Parquet values with their own types (missing ones as None/NA)."""
    try:
        if path.suffix == ".jsonl":
            frame = _read_jsonl(path)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path, encoding="utf-8", keep_default_na=False, dtype=str)
        elif path.suffix == ".parquet":
            # Nullable types: an integer column with a gap stays integers (not floats).
            frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
        else:
            raise UserError(f"{path}: unsupported format; use .jsonl, .csv or .parquet.")
    except FileNotFoundError:
        raise UserError(f"Data file {path} does not exist; check --data-dir.") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8 text; re-save it as UTF-8.") from None
    except (ValueError, pd.errors.ParserError) as exc:
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty; it needs one example per row.") from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} could not be parsed ({first}); fix the file.") from None
    if frame.empty:
        raise UserError(f"{path} is empty; it needs one example per row.")
    return frame


def find_split_file(folder: Path, split: str) -> Path:
    for ext in FORMATS:
        candidate = folder / f"{split}.{ext}"
        if candidate.exists():
            return candidate
    raise UserError(
        f"No {split} file in {folder}: expected {split}.jsonl, {split}.csv or {split}.parquet."
    )
