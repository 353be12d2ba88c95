"""What the retention measurements add to a cell: the same quick-preset cell run with
`measure_retention` on and off, side by side, in this process.

    python benchmarks/retention_cost.py --data-dir ../shared/data
    python benchmarks/retention_cost.py --task banking77 --strategy full --data-dir ../shared/data

Runs, in order: the cell with retention and an empty retention cache (the first cell of a
model: it draws the probe set and runs the base model), the cell without retention, then the
cell with retention and the cache warm (every later cell of the model), and prints each one's
total and retention phase and the share of the cell the retention phase took. Token caches
are warm for the second and third run alike. Other work on the machine slows every run; run
it on a quiet machine for absolute figures, and read the shares under load as shares.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PEFT_ARENA_QUIET", "1")

from peft_arena import api
from peft_arena.cell.entry import run_cell


def _run(spec, data_dir: str) -> dict:
    record = run_cell(spec, data_dir)
    phases = record["time"]["phases"]
    kept = record.get("retention") or {}
    update = record.get("weight_update") or {}
    return {"total_s": record["time"]["total_s"], "retention_s": phases.get("retention_s", 0.0),
            "train_s": phases["train_s"], "accuracy": record["metrics"]["accuracy"],
            "retention_parts": kept.get("phases"), "weight_update_s": update.get("seconds"),
            "base_cache_hit": kept.get("base_cache_hit")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="agnews")
    parser.add_argument("--strategy", default="lora")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    [spec] = api.plan_cells([args.task], [args.strategy], preset=args.preset)
    off = api.plan_cells([args.task], [args.strategy], preset=args.preset,
                         sets=["measure_retention=false"])[0]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["PEFT_ARENA_CACHE"] = cache  # an empty cache: the first cell of a model
        print(f"{args.task} / {args.strategy} ({args.preset} preset), {os.cpu_count()} CPUs",
              flush=True)
        runs = {}
        for name, cell in (("on, cold cache", spec), ("off", off), ("on, warm cache", spec)):
            runs[name] = _run(cell, args.data_dir)
            _show(name, runs[name])
    on, base = runs["on, warm cache"], runs["off"]
    print(f"warm: retention phase / cell without it = {on['retention_s'] / base['total_s']:.1%};"
          f" total with / without = {on['total_s'] / base['total_s']:.3f}; "
          f"load average {os.getloadavg()[0]:.1f} at the end")


def _show(name: str, run: dict) -> None:
    share = run["retention_s"] / run["total_s"]
    print(f"  {name:15s} total {run['total_s']:7.1f} s  train {run['train_s']:7.1f} s  "
          f"retention {run['retention_s']:6.1f} s = {share:5.1%} of the cell  "
          f"accuracy {run['accuracy']:.3f}", flush=True)
    if run["retention_parts"]:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in run["retention_parts"].items())
        print(f"  {'':15s} ({parts}, weight update {run['weight_update_s']:.1f} s)",
              flush=True)


if __name__ == "__main__":
    main()
