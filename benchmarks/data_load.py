"""What loading a task's data costs, and the share of it the data-hygiene counts take.

Side by side in one run, repetitions interleaved so that machine noise hits every step
alike: reading the JSONL files the way pandas does (`pd.read_json`, the former reader) and
the way peft-arena does now (the json module, values kept as written); the whole
`load_task_data` (read, check, subset, carve) with either reader; and
`hygiene.record_section` (normalising and comparing every text of the full splits and of the
rows used).

    python benchmarks/data_load.py --data-dir ../shared/data --task imdb --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from peft_arena.cell import data as task_data
from peft_arena.cell import hygiene
from peft_arena.config.tasks import resolve_task


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

    def load() -> task_data.TaskData:
        return task_data.load_task_data(task, Path(args.data_dir),
                                        max_train_samples=args.max_train_samples,
                                        max_eval_samples=args.max_eval_samples)

    def load_with_pandas_reader() -> task_data.TaskData:
        json_reader = task_data._read_jsonl
        task_data._read_jsonl = _pandas_jsonl
        try:
            return load()
        finally:
            task_data._read_jsonl = json_reader

    loaded = load()
    steps: dict[str, Callable[[], object]] = {
        "read both files, pd.read_json": lambda: [_pandas_jsonl(f) for f in files],
        "read both files, json module": lambda: [task_data._read_table(f) for f in files],
        "load_task_data, pd.read_json reader": load_with_pandas_reader,
        "load_task_data (read, check, split)": load,
        "hygiene.record_section": lambda: hygiene.record_section(loaded),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(_timed(step))
    rows = loaded.loaded
    assert rows is not None
    print(f"{args.task}: {len(rows.train_texts):,} train + {len(rows.test_texts):,} test rows, "
          f"median of {args.repeats}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["load_task_data (read, check, split)"]
    for name, median in medians.items():
        print(f"  {name:<38} {median:7.3f} s  ({median / base:.2f}x load_task_data)")
    old, new = medians["read both files, pd.read_json"], medians["read both files, json module"]
    print(f"  json-module reader vs pd.read_json: {old / new:.1f}x faster")
    before = medians["load_task_data, pd.read_json reader"]
    now = base + medians["hygiene.record_section"]
    print(f"  data phase now (load_task_data + hygiene) vs with the pd.read_json reader and no "
          f"hygiene: {now:.3f} s vs {before:.3f} s ({now / before:.2f}x)")


if __name__ == "__main__":
    main()
