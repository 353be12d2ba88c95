"""Load a task's train/test data (Hub or a local folder), check it (data/rows.py), and split it
(data/splits.py).

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
import os
from pathlib import Path

import numpy as np

from peft_arena.common import progress
from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import TaskSpec, resolve_task
from peft_arena.data import hygiene
from peft_arena.data.files import find_split_file, read_table
from peft_arena.data.rows import RawSplit, checked_split, label_names
from peft_arena.data.splits import TaskData, split_task_data, subset

DATA_DIR_ENV = "PEFT_ARENA_DATA_DIR"


def _local_file(path: Path) -> RawSplit:
    return RawSplit(read_table(path), str(path), typed=path.suffix != ".csv")


def _local_frames(task: TaskSpec, data_dir: Path | None) -> tuple[RawSplit, RawSplit,
                                                                   list[str] | None]:
    if task.is_local:
        assert task.train_file is not None and task.test_file is not None
        return _local_file(task.train_file), _local_file(task.test_file), None
    assert data_dir is not None
    folder = Path(data_dir) / task.data_name
    if not folder.is_dir():
        raise UserError(
            f"No folder for task {task.name!r} in data dir {data_dir}; expected {folder}/."
        )
    train = _local_file(find_split_file(folder, "train"))
    test = _local_file(find_split_file(folder, "test"))
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


def _hub_frames(task: TaskSpec) -> tuple[RawSplit, RawSplit, list[str] | None]:
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
    return (RawSplit(train.to_pandas(), f"{task.hub.path} ({task.hub.train_split})", True),
            RawSplit(test.to_pandas(), f"{task.hub.path} ({task.hub.test_split})", True),
            names)


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
        origin = str(task.train_file.parent if task.is_local else Path(data_dir) / task.data_name)
    else:
        raw_train, raw_test, found = _hub_frames(task)
        origin = task.hub.path if task.hub else task.name
    names = label_names(task, raw_train, found)
    train, train_dropped = checked_split(raw_train, task, names, on_bad_rows)
    test, test_dropped = checked_split(raw_test, task, names, on_bad_rows)
    full_texts = {"train": train.texts, "test": test.texts}  # before dropping leaked rows
    if drop_test_leaks:
        leaked = hygiene.found_in(test.texts, train.texts)
        if leaked.all():
            raise UserError(f"{raw_test.where}: every test row also appears in train; "
                            f"drop_test_leaks would leave no test split.")
        if leaked.any():
            test = subset(test, np.flatnonzero(~leaked))
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
        data.hygiene = hygiene.record_section(
            full_texts, {"train": data.train.texts, "val": data.val.texts,
                         "test": data.test.texts},
            dropped={"train": train_dropped, "test": test_dropped},
            on_bad_rows=on_bad_rows, drop_test_leaks=drop_test_leaks)
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
