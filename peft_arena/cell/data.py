"""Load a task's train/test data (Hub or a local folder), check it, and split it.

Local layout, for `--data-dir DIR` or the PEFT_ARENA_DATA_DIR environment variable:

    DIR/<task>/train.{jsonl,csv,parquet}
    DIR/<task>/test.{jsonl,csv,parquet}
    DIR/<task>/labels.json      (optional) label names, index = label id

Checks: a row that cannot be used (empty text, a missing, float or unknown label) stops the
load with the file, the count and the first row numbers, unless the task's `on_bad_rows` is
`drop`; with `drop_test_leaks` the test rows whose text is also in train are dropped (see
config/tasks.py). On request, `TaskData.hygiene` holds the record's data-hygiene section.

Splits: a validation split is carved from train (seeded, stratified); the test split is kept
whole for the final evaluation. Subsets are seeded and stratified by class.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from peft_arena import progress
from peft_arena.cell import hygiene
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import TaskSpec, resolve_task
from peft_arena.errors import UserError

DATA_DIR_ENV = "PEFT_ARENA_DATA_DIR"
FORMATS = ("jsonl", "csv", "parquet")


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Loaded:
    """The task's splits as loaded, before subsetting: what the data-hygiene section reports
    beside the rows used."""

    train_texts: list[str]  # after dropping bad rows
    test_texts: list[str]  # after dropping bad rows, before dropping leaked rows
    dropped: dict[str, dict[str, int]]  # split -> why -> rows
    on_bad_rows: str
    drop_test_leaks: bool


@dataclass
class TaskData:
    train: Split
    val: Split
    test: Split
    label_names: list[str]
    # The record's data-hygiene section (see cell/hygiene.py), when asked for.
    hygiene: dict[str, Any] | None = field(default=None, compare=False)


# ---------------------------------------------------------------- reading files


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


def _read_table(path: Path) -> pd.DataFrame:
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


def _find_split_file(folder: Path, split: str) -> Path:
    for ext in FORMATS:
        candidate = folder / f"{split}.{ext}"
        if candidate.exists():
            return candidate
    raise UserError(
        f"No {split} file in {folder}: expected {split}.jsonl, {split}.csv or {split}.parquet."
    )


@dataclass
class _RawSplit:
    """One split as read, before any check."""

    frame: pd.DataFrame
    where: str  # the file, or the Hub data set and split: what an error names
    typed: bool  # False for CSV, whose numbers arrive as text


def _local_file(path: Path) -> _RawSplit:
    return _RawSplit(_read_table(path), str(path), typed=path.suffix != ".csv")


def _local_frames(task: TaskSpec, data_dir: Path | None) -> tuple[_RawSplit, _RawSplit,
                                                                   list[str] | None]:
    if task.is_local:
        assert task.train_file is not None and task.test_file is not None
        return _local_file(task.train_file), _local_file(task.test_file), None
    assert data_dir is not None
    folder = Path(data_dir) / task.name
    if not folder.is_dir():
        raise UserError(
            f"No folder for task {task.name!r} in data dir {data_dir}; expected {folder}/."
        )
    train = _local_file(_find_split_file(folder, "train"))
    test = _local_file(_find_split_file(folder, "test"))
    labels_file = folder / "labels.json"
    names = None
    if labels_file.exists():
        try:
            names = [str(n) for n in json.loads(labels_file.read_text(encoding="utf-8"))]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            raise UserError(f"{labels_file} must be a JSON list of label names.") from None
    return train, test, names


def _hub_snapshot(path: str, revision: str | None) -> str | None:
    """The data set's folder in the Hugging Face cache (`hf download --repo-type dataset`, or
    an earlier online load), or None when the cache holds no snapshot of that revision."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(path, repo_type="dataset", revision=revision,
                                 local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def _hub_dataset(task: TaskSpec):
    """`datasets.load_dataset` of the task's Hub repository, as a user online gets it. Offline
    (HF_HUB_OFFLINE=1) datasets reloads only what it prepared on an earlier online load; a
    snapshot in the Hub cache is then loaded from its folder, by the same data-file rules."""
    import datasets  # imported here: loading it costs a second the local path doesn't need

    assert task.hub is not None
    if progress.is_quiet():  # its per-split bars would fill a log
        datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(task.hub.path, revision=task.hub.revision)
    except Exception as exc:  # network, auth, missing data set: all fixable by the user
        failure = exc
    snapshot = _hub_snapshot(task.hub.path, task.hub.revision)
    if snapshot is not None:
        try:
            return datasets.load_dataset(snapshot)
        except Exception as exc:
            failure = exc
    raise UserError(
        f"Could not load {task.hub.path!r} from the Hugging Face Hub ({type(failure).__name__}); "
        f"pass --data-dir with a local copy or check your connection."
    ) from None


def _hub_frames(task: TaskSpec) -> tuple[_RawSplit, _RawSplit, list[str] | None]:
    assert task.hub is not None
    loaded = _hub_dataset(task)
    for split in (task.hub.train_split, task.hub.test_split):
        if split not in loaded:
            raise UserError(
                f"{task.hub.path}: no split {split!r} (found: {', '.join(loaded)}); set "
                f"hub.train_split/hub.test_split in the task file.")
    train, test = loaded[task.hub.train_split], loaded[task.hub.test_split]
    feature = train.features.get(task.label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    return (_RawSplit(train.to_pandas(), f"{task.hub.path} ({task.hub.train_split})", True),
            _RawSplit(test.to_pandas(), f"{task.hub.path} ({task.hub.test_split})", True),
            names)


# ---------------------------------------------------------------- checking and encoding

# Why a row cannot be used, in the order a row is checked (a row counts under its first).
BAD_ROW_REASONS = {
    "empty_text": "empty or whitespace-only text",
    "missing_label": "no label",
    "float_label": "a float label where integer ids are expected",
    "label_out_of_range": "a label id outside the label names",
    "unknown_label": "a label that is not among the task's label names",
}
ROWS_SHOWN = 5  # row numbers an error lists per reason
_INTEGER = re.compile(r"[+-]?\d+")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float):  # numpy floats too
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _number(value: Any, typed: bool) -> int | float | None:
    """A label as a number (an int id, or a float: a bad row), or None for a label name."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if not typed and isinstance(value, str):
        # CSV has no types: read numbers the way pandas would have inferred the column.
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _parse_labels(values: list[Any], typed: bool) -> tuple[list[bool], list[Any] | None]:
    """(missing per row, the labels as numbers, or None when the split's labels are names).

    A split's labels are ids when every present label is a number, names otherwise.
    """
    missing = [_is_missing(v) for v in values]
    numbers = [None if gone else _number(v, typed) for v, gone in zip(values, missing,
                                                                     strict=True)]
    present = [n for n, gone in zip(numbers, missing, strict=True) if not gone]
    is_ids = bool(present) and all(n is not None for n in present)
    return missing, numbers if is_ids else None


def _label_ids(values: list[Any], typed: bool, names: list[str]
               ) -> tuple[np.ndarray, list[str | None]]:
    """(label id per row, -1 where unusable; the reason a row is unusable, or None)."""
    missing, numbers = _parse_labels(values, typed)
    index = {name: i for i, name in enumerate(names)}
    ids = np.full(len(values), -1, dtype=np.int64)
    reasons: list[str | None] = [None] * len(values)
    for i, value in enumerate(values):
        if missing[i]:
            reasons[i] = "missing_label"
        elif numbers is not None:
            number = numbers[i]
            if isinstance(number, float):
                reasons[i] = "float_label"
            elif 0 <= number < len(names):
                ids[i] = number
            else:
                reasons[i] = "label_out_of_range"
        elif (found := index.get(str(value))) is not None:
            ids[i] = found
        else:
            reasons[i] = "unknown_label"
    return ids, reasons


def _bad_rows_message(raw: _RawSplit, column: str, reasons: list[str | None],
                      n_labels: int) -> str:
    rows: dict[str, list[int]] = {reason: [] for reason in BAD_ROW_REASONS}
    for i, reason in enumerate(reasons):
        if reason is not None:
            rows[reason].append(i)
    parts = []
    for reason, found in rows.items():
        if not found:
            continue
        what = BAD_ROW_REASONS[reason]
        if reason == "label_out_of_range":
            what = f"a label id outside 0..{n_labels - 1}"
        if reason != "empty_text" and reason != "missing_label":
            what += f", e.g. {raw.frame[column].iloc[found[0]]!r}"
        numbers = ", ".join(str(i + 1) for i in found[:ROWS_SHOWN])
        more = ", ..." if len(found) > ROWS_SHOWN else ""
        parts.append(f"{what} in {_rows(len(found))} ({numbers}{more})")
    total = sum(map(len, rows.values()))
    return (f"{raw.where}: {_rows(total)} cannot be used: {'; '.join(parts)}. Fix them, or "
            f"drop them with `on_bad_rows: drop` in the task file (or --set on_bad_rows=drop).")


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _checked_split(raw: _RawSplit, task: TaskSpec, names: list[str], on_bad_rows: str
                   ) -> tuple[Split, dict[str, int]]:
    """The split's usable rows, and how many rows were dropped for each reason."""
    frame = raw.frame
    for column in (task.text_column, task.label_column):
        if column not in frame.columns:
            raise UserError(
                f"{raw.where}: no column {column!r} (found: "
                f"{', '.join(map(str, frame.columns))}); set text_column/label_column in the "
                f"task file."
            )
    texts = frame[task.text_column].tolist()
    ids, reasons = _label_ids(frame[task.label_column].tolist(), raw.typed, names)
    for i, text in enumerate(texts):
        if _is_missing(text):
            reasons[i] = "empty_text"  # checked first: it outranks a label problem
    bad = [reason for reason in reasons if reason is not None]
    if not bad:
        return Split([str(t) for t in texts], ids), {}
    if on_bad_rows != "drop":
        raise UserError(_bad_rows_message(raw, task.label_column, reasons, len(names)))
    keep = [i for i, reason in enumerate(reasons) if reason is None]
    if not keep:
        raise UserError(f"{raw.where}: none of its {len(texts)} rows can be used; fix the file.")
    dropped = {reason: bad.count(reason) for reason in BAD_ROW_REASONS if reason in bad}
    return Split([str(texts[i]) for i in keep], ids[keep]), dropped


def _label_names(task: TaskSpec, train: _RawSplit, found: list[str] | None) -> list[str]:
    if task.labels:
        return list(task.labels)
    if found:
        return found
    if task.label_column not in train.frame.columns:
        return []  # _checked_split reports the missing column
    values = train.frame[task.label_column].tolist()
    missing, numbers = _parse_labels(values, train.typed)
    if numbers is not None:
        ids = [n for n in numbers if isinstance(n, int)]  # floats are bad rows
        return [str(i) for i in range(max(ids) + 1)] if ids else []
    return sorted({str(v) for v, gone in zip(values, missing, strict=True) if not gone})


# ---------------------------------------------------------------- subsets and splits


def _stratified_take(split: Split, n: int, seed: int) -> tuple[Split, Split]:
    """(taken, rest): n examples drawn with class proportions kept where possible."""
    if n >= len(split):
        return split, Split([], split.labels[:0])
    index = np.arange(len(split))
    try:
        taken, rest = train_test_split(index, train_size=n, random_state=seed,
                                       stratify=split.labels)
    except ValueError:  # a class too small to stratify, or n below the class count
        taken, rest = train_test_split(index, train_size=n, random_state=seed, shuffle=True)
    return _subset(split, taken), _subset(split, rest)


def _subset(split: Split, index: np.ndarray) -> Split:
    return Split([split.texts[i] for i in index], split.labels[index])


def _check_classes(train: Split, names: list[str], origin: str) -> None:
    missing = sorted(set(range(len(names))) - set(np.unique(train.labels).tolist()))
    if missing:
        raise UserError(
            f"{origin}: class {names[missing[0]]!r} has no training example"
            f"{' (after subsetting)' if len(missing) < len(names) else ''}; "
            f"add examples or raise --max-train-samples."
        )


def split_task_data(
    train: Split,
    test: Split,
    label_names: list[str],
    *,
    val_fraction: float,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    seed: int,
    origin: str,
) -> TaskData:
    """Carve validation from train and take seeded, stratified subsets."""
    pool_size = len(train)
    if max_train_samples is not None:
        pool_size = min(pool_size, math.ceil(max_train_samples / (1 - val_fraction)))
    pool, _ = _stratified_take(train, pool_size, seed)
    val_size = max(1, round(val_fraction * len(pool)))
    if max_train_samples is not None:
        # Rounding must not leave one example more than asked for in train.
        val_size = max(val_size, len(pool) - max_train_samples)
    val, rest = _stratified_take(pool, val_size, seed + 1)
    if len(rest) < 2:
        raise UserError(f"{origin}: too few training examples ({len(train)}); add data.")
    if max_eval_samples is not None:
        val, _ = _stratified_take(val, max_eval_samples, seed + 2)
        test, _ = _stratified_take(test, max_eval_samples, seed + 3)
    _check_classes(rest, label_names, origin)
    return TaskData(train=rest, val=val, test=test, label_names=label_names)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    value = data_dir or os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserError(f"Data dir {path} does not exist; pass an existing folder to --data-dir.")
    return path


def load_task_data(
    task: TaskSpec,
    data_dir: Path | None,
    *,
    val_fraction: float = 0.1,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    on_bad_rows: str | None = None,
    drop_test_leaks: bool | None = None,
    data_hygiene: bool = False,
) -> TaskData:
    """The task's splits, checked, subset and carved. `on_bad_rows` and `drop_test_leaks`
    override the task's own settings (None: keep them). `data_hygiene` fills `hygiene`; it
    costs about as much as the load, so only a cell that records it asks."""
    on_bad_rows = on_bad_rows or task.on_bad_rows
    drop_test_leaks = task.drop_test_leaks if drop_test_leaks is None else drop_test_leaks
    if task.is_local or data_dir is not None:
        raw_train, raw_test, found = _local_frames(task, data_dir)
        origin = str(task.train_file.parent if task.is_local else Path(data_dir) / task.name)
    else:
        raw_train, raw_test, found = _hub_frames(task)
        origin = task.hub.path if task.hub else task.name
    names = _label_names(task, raw_train, found)
    train, train_dropped = _checked_split(raw_train, task, names, on_bad_rows)
    test, test_dropped = _checked_split(raw_test, task, names, on_bad_rows)
    loaded = Loaded(train.texts, test.texts, {"train": train_dropped, "test": test_dropped},
                    on_bad_rows, drop_test_leaks)
    if drop_test_leaks:
        leaked = hygiene.found_in(test.texts, train.texts)
        if leaked.all():
            raise UserError(f"{raw_test.where}: every test row also appears in train; "
                            f"drop_test_leaks would leave no test split.")
        if leaked.any():
            test = _subset(test, np.flatnonzero(~leaked))
            test_dropped[hygiene.LEAKED] = int(leaked.sum())
    data = split_task_data(
        train, test, names,
        val_fraction=val_fraction,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        seed=seed,
        origin=origin,
    )
    if data_hygiene:
        # Counted here, so that the full splits' texts are not kept alive through training
        # (they would raise the cell's recorded peak memory).
        data.hygiene = hygiene.record_section(loaded, data)
    return data


def load_cell_data(spec: CellSpec, data_dir: str | Path | None, *,
                   data_hygiene: bool = False) -> TaskData:
    """The data a cell trains, validates and tests on, as its settings choose it. A search
    trial (`evaluate_on: validation`) is tested on its validation split: the test split is
    dropped as soon as it is read."""
    data = load_task_data(
        resolve_task(spec.task_source), resolve_data_dir(data_dir),
        val_fraction=spec.val_fraction, max_train_samples=spec.max_train_samples,
        max_eval_samples=spec.max_eval_samples, seed=spec.data_seed,
        on_bad_rows=spec.on_bad_rows, drop_test_leaks=spec.drop_test_leaks,
        data_hygiene=data_hygiene,
    )
    if spec.evaluate_on == "validation":
        data.test = data.val
    return data
