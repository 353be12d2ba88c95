"""What loading a task's data costs, and the share of it the data-hygiene counts take.

Side by side in one run, repetitions interleaved so that machine noise hits every step
alike: reading the JSONL files the way pandas does (`pd.read_json`, the former reader) and
the way peft-arena does now (the json module, values kept as written); the whole
`load_task_data` (read, check, subset, carve) with either reader, and with the data-hygiene
counts (normalising and comparing every text of the full splits and of the rows used), as a
cell loads it.

    python benchmarks/data_load.py --data-dir ../shared/data --task imdb --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from peft_arena.config.tasks import resolve_task
from peft_arena.data import files as data_files
from peft_arena.data import loading as task_data


def _pandas_jsonl(path: Path) -> pd.DataFrame:
    """The former reader (right for files whose labels are all integers, like the real data)."""
    return pd.read_json(path, lines=True, dtype=False, encoding="utf-8")


def _timed(step: Callable[[], object]) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--task", default="imdb")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-train-samples", type=int, default=200)
    parser.add_argument("--max-eval-samples", type=int, default=100)
    args = parser.parse_args()
    folder = Path(args.data_dir) / args.task
    files = [folder / "train.jsonl", folder / "test.jsonl"]
    task = resolve_task(args.task)

    def load(data_hygiene: bool = False) -> task_data.TaskData:
        return task_data.load_task_data(task, Path(args.data_dir),
                                        max_train_samples=args.max_train_samples,
                                        max_eval_samples=args.max_eval_samples,
                                        data_hygiene=data_hygiene)

    def load_with_pandas_reader() -> task_data.TaskData:
        json_reader = data_files._read_jsonl
        data_files._read_jsonl = _pandas_jsonl
        try:
            return load()
        finally:
            data_files._read_jsonl = json_reader

    steps: dict[str, Callable[[], object]] = {
        "read both files, pd.read_json": lambda: [_pandas_jsonl(f) for f in files],
        "read both files, json module": lambda: [data_files.read_table(f) for f in files],
        "load, pd.read_json reader": load_with_pandas_reader,
        "load (read, check, split)": load,
        "load with data hygiene": lambda: load(data_hygiene=True),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(_timed(step))
    section = load(data_hygiene=True).hygiene
    assert section is not None
    full = section["full"]
    print(f"{args.task}: {full['train']['rows']:,} train + {full['test']['rows']:,} test rows, "
          f"median of {args.repeats}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["load (read, check, split)"]
    for name, median in medians.items():
        print(f"  {name:<32} {median:7.3f} s  ({median / base:.2f}x load)")
    old, new = medians["read both files, pd.read_json"], medians["read both files, json module"]
    print(f"  json-module reader vs pd.read_json: {old / new:.1f}x faster")
    with_hygiene = medians["load with data hygiene"]
    hygiene_s = with_hygiene - base
    before = medians["load, pd.read_json reader"]
    print(f"  data hygiene adds {hygiene_s:.3f} s ({hygiene_s / base:.2f}x the load); a cell's "
          f"data phase takes {with_hygiene / before:.2f}x the former load without it")

if __name__ == "__main__":
    main()
