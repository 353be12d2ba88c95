"""Wall time of the same 8 tiny cells run one at a time, two at a time, and as Ray tasks on a
local 2-CPU cluster, side by side in one run; and Ray's overhead per cell.

    python benchmarks/scale.py             # the tiny random BERT and keyword task (temp dir)
    python benchmarks/scale.py --cells 4   # fewer cells (4 strategies x 1 seed)

Each configuration runs the same matrix into a fresh results folder. "Outside the cell" is
the time the matrix saw a cell take minus the time the cell measured inside itself (its
process start and imports), averaged over the cells; for Ray, which takes every cell at once
and queues them, it also holds the time a cell waited for a free CPU, so Ray's overhead per
cell is read from the wall times instead: (Ray's wall time - 2 local workers' wall time) /
cells, both running two cells at once. Ray's cluster start is timed apart. Ray runs its
workers at a lower CPU priority (nice), so on a machine busy with other work its cells lose
more time than local ones. Needs the ray extra.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kill_matrix import build_tiny_setup

STRATEGIES = ["lora", "ia3", "full", "loha"]


def run_once(cells, results: Path, executor) -> tuple[float, float, int]:
    """(wall seconds, mean overhead per cell, cells ok)."""
    from peft_arena.matrix.execute import run_matrix

    began = time.perf_counter()
    result = run_matrix(cells, results, executor=executor)
    wall = time.perf_counter() - began
    overheads = [o.seconds - o.record["time"]["total_s"] for o in result.outcomes
                 if o.status == "ok"]
    return wall, statistics.mean(overheads), result.count("ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8, choices=(4, 8))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PEFT_ARENA_QUIET", "1")
    import ray

    from peft_arena import api
    from peft_arena.matrix.executors import ExecutorSettings

    with tempfile.TemporaryDirectory(prefix="peft-arena-scale-") as folder:
        work = Path(folder)
        os.environ["PEFT_ARENA_CACHE"] = str(work / "cache")
        model, task = build_tiny_setup(work)
        cells = api.plan_cells(tasks=[str(task)], strategies=STRATEGIES, model=str(model),
                               seeds=[0, 1][:args.cells // len(STRATEGIES)],
                               sets=["batch_size=16", "learning_rate=1e-2"],
                               flags={"epochs": 1, "max_eval_samples": 30})
        rows = []
        for name, settings in (("local, 1 worker", ExecutorSettings(workers=1)),
                               ("local, 2 workers", ExecutorSettings(workers=2))):
            rows.append((name, *run_once(cells, work / name.replace(" ", "_"), settings)))
        began = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - began
        try:
            rows.append(("ray, 2 CPUs", *run_once(cells, work / "ray", ExecutorSettings(
                name="ray"))))
        finally:
            ray.shutdown()
    cores = len(os.sched_getaffinity(0))
    print(f"{len(cells)} tiny cells (2-layer BERT, 120 train / 30 test examples), "
          f"{cores} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'executor':<18}{'wall s':>8}{'vs 1 worker':>13}{'outside cell s':>16}{'ok':>4}")
    base = rows[0][1]
    for name, wall, overhead, ok in rows:
        print(f"{name:<18}{wall:>8.1f}{base / wall:>12.2f}x{overhead:>16.2f}{ok:>4}")
    ray_overhead = (rows[2][1] - rows[1][1]) / len(cells)
    print(f"Ray's overhead per cell beyond local processes: {ray_overhead:+.2f} s "
          f"(cluster start, once: {ray_start:.1f} s)")
    return 0 if all(ok == len(cells) for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
