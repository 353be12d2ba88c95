"""Load a task's train/test data (Hub or a local folder), check it, and split it.

Local layout, for `--data-dir DIR` or the PEFT_ARENA_DATA_DIR environment variable:

    DIR/<task>/train.{jsonl,csv,parquet}
    DIR/<task>/test.{jsonl,csv,parquet}
    DIR/<task>/labels.json      (optional) label names, index = label id

Splits: a validation split is carved from train (seeded, stratified); the test split is kept
whole for the final evaluation. Subsets are seeded and stratified by class.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

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
class TaskData:
    train: Split
    val: Split
    test: Split
    label_names: list[str]


# ---------------------------------------------------------------- reading files


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, encoding="utf-8", dtype=False)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path, encoding="utf-8", keep_default_na=False)
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
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


def _local_frames(task: TaskSpec, data_dir: Path | None) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                   list[str] | None]:
    if task.is_local:
        assert task.train_file is not None and task.test_file is not None
        return _read_table(task.train_file), _read_table(task.test_file), None
    assert data_dir is not None
    folder = Path(data_dir) / task.name
    if not folder.is_dir():
        raise UserError(
            f"No folder for task {task.name!r} in data dir {data_dir}; expected {folder}/."
        )
    train = _read_table(_find_split_file(folder, "train"))
    test = _read_table(_find_split_file(folder, "test"))
    labels_file = folder / "labels.json"
    names = None
    if labels_file.exists():
        try:
            names = [str(n) for n in json.loads(labels_file.read_text(encoding="utf-8"))]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            raise UserError(f"{labels_file} must be a JSON list of label names.") from None
    return train, test, names


def _hub_frames(task: TaskSpec) -> tuple[pd.DataFrame, pd.DataFrame, list[str] | None]:
    import datasets  # imported here: loading it costs a second the local path doesn't need

    assert task.hub is not None
    try:
        loaded = datasets.load_dataset(task.hub.path, revision=task.hub.revision)
    except Exception as exc:  # network, auth, missing data set: all fixable by the user
        raise UserError(
            f"Could not load {task.hub.path!r} from the Hugging Face Hub ({type(exc).__name__}); "
            f"pass --data-dir with a local copy or check your connection."
        ) from None
    train, test = loaded[task.hub.train_split], loaded[task.hub.test_split]
    feature = train.features.get(task.label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    return train.to_pandas(), test.to_pandas(), names


# ---------------------------------------------------------------- checking and encoding


def _label_ids(frame: pd.DataFrame, column: str, names: list[str], origin: str) -> np.ndarray:
    values = frame[column]
    if pd.api.types.is_integer_dtype(values):
        ids = values.to_numpy(dtype=np.int64)
        bad = (ids < 0) | (ids >= len(names))
        if bad.any():
            raise UserError(
                f"{origin}: label {ids[bad][0]} is outside the {len(names)} label names; "
                f"fix the labels or labels.json."
            )
        return ids
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise UserError(
            f"{origin}: label {unknown[0]!r} is not among the task's label names; "
            f"add it to 'labels' or fix the data."
        )
    return np.array([index[str(v)] for v in values], dtype=np.int64)


def _to_split(frame: pd.DataFrame, task: TaskSpec, names: list[str], origin: str) -> Split:
    for column in (task.text_column, task.label_column):
        if column not in frame.columns:
            raise UserError(
                f"{origin}: no column {column!r} (found: {', '.join(map(str, frame.columns))}); "
                f"set text_column/label_column in the task file."
            )
    texts = frame[task.text_column]
    if texts.isna().any():
        raise UserError(f"{origin}: {int(texts.isna().sum())} rows have no text; remove them.")
    return Split([str(t) for t in texts], _label_ids(frame, task.label_column, names, origin))


def _label_names(task: TaskSpec, train: pd.DataFrame, found: list[str] | None) -> list[str]:
    if task.labels:
        return list(task.labels)
    if found:
        return found
    if task.label_column not in train.columns:
        return []  # _to_split reports the missing column
    values = train[task.label_column]
    if pd.api.types.is_integer_dtype(values):
        return [str(i) for i in range(int(values.max()) + 1)]
    return sorted({str(v) for v in values})


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
) -> TaskData:
    if task.is_local or data_dir is not None:
        train_frame, test_frame, found = _local_frames(task, data_dir)
        origin = str(task.train_file.parent if task.is_local else Path(data_dir) / task.name)
    else:
        train_frame, test_frame, found = _hub_frames(task)
        origin = task.hub.path if task.hub else task.name
    names = _label_names(task, train_frame, found)
    train = _to_split(train_frame, task, names, f"{origin} (train)")
    test = _to_split(test_frame, task, names, f"{origin} (test)")
    return split_task_data(
        train, test, names,
        val_fraction=val_fraction,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        seed=seed,
        origin=origin,
    )


def load_cell_data(spec: CellSpec, data_dir: str | Path | None) -> TaskData:
    """The data a cell trains, validates and tests on, as its settings choose it."""
    return load_task_data(resolve_task(spec.task_source), resolve_data_dir(data_dir),
                          val_fraction=spec.val_fraction,
                          max_train_samples=spec.max_train_samples,
                          max_eval_samples=spec.max_eval_samples, seed=spec.data_seed)
