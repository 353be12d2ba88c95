"""Records on disk: RESULTS/records/<cell id>.json, written atomically, read back tolerantly.

What a record holds is described in records.schema.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

from peft_arena.common import atomic_file
from peft_arena.records.schema import SCHEMA_VERSION, Record

RECORDS_SUBDIR = "records"
TEMP_SUFFIX = ".tmp"


def records_dir(results_dir: Path) -> Path:
    return Path(results_dir) / RECORDS_SUBDIR


def results_dir_of(record_file: Path) -> Path:
    """The results folder a record file lives in (saved models and logs go beside records)."""
    return Path(record_file).parent.parent


def record_path(results_dir: Path, cell_id: str) -> Path:
    path = records_dir(results_dir) / f"{cell_id}.json"
    # cell ids are built from checked names, but never trust a path that leaves the folder.
    if records_dir(results_dir).resolve() not in path.resolve().parents:
        raise ValueError(f"record path {path} escapes the results folder")
    return path


def write_record(path: Path, record: Record) -> None:
    """Atomically and durably: a reader sees the old record, the new one, or none. A process
    killed mid-write leaves only a `.<cell id>.*.tmp` file, which readers never match and
    `remove_temp_files` clears."""
    atomic_file.write_json(path, record, suffix=TEMP_SUFFIX, durable=True)


def temp_files(results_dir: Path, cell_id: str) -> list[Path]:
    """Leftovers of interrupted writes of one cell's record."""
    return sorted(records_dir(results_dir).glob(f".{cell_id}.*{TEMP_SUFFIX}"))


def remove_temp_files(results_dir: Path, cell_id: str) -> int:
    """Delete a cell's leftover temporary files; only safe while holding the cell's lock,
    since another process's write in progress looks the same."""
    removed = 0
    for path in temp_files(results_dir, cell_id):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def read_record(path: Path) -> Record | None:
    """A record, or None (with a warning) for a file that is not a peft-arena record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"Skipping {path}: not readable JSON ({exc}).", stacklevel=2)
        return None
    if (not isinstance(data, dict) or not isinstance(data.get("schema_version"), int)
            or "spec" not in data):
        warnings.warn(f"Skipping {path}: not a peft-arena record.", stacklevel=2)
        return None
    if data["schema_version"] > SCHEMA_VERSION:
        warnings.warn(
            f"Skipping {path}: schema {data['schema_version']} is newer than this peft-arena "
            f"({SCHEMA_VERSION}); upgrade peft-arena to read it.",
            stacklevel=2,
        )
        return None
    if data.get("cell_id", path.stem) != path.stem:
        # A copied or renamed file would count its cell twice.
        warnings.warn(f"Skipping {path}: it holds cell {data['cell_id']!r}, not {path.stem!r} "
                      f"(a copy?); remove it.", stacklevel=2)
        return None
    return data


def iter_records(results_dir: Path) -> Iterator[Record]:
    folder = records_dir(results_dir)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        record = read_record(path)
        if record is not None:
            yield record
