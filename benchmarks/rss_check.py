"""Check the recorded peak memory against the operating system's own figure.

Runs one real cell in a process of its own under GNU time (`/usr/bin/time -v`), exactly as the
matrix runs it (`python -m peft_arena.matrix.cell_process`), then prints the record's peak
resident memory next to time's "Maximum resident set size" and their ratio. Exit status 0 when
they agree within the tolerance (default 10%), 1 when they do not, 2 when GNU time is missing.

    python benchmarks/rss_check.py --data-dir /work/shared/data
    python benchmarks/rss_check.py --model path/to/model --task mytask.yaml --strategy full
    python benchmarks/rss_check.py --spec-file cell.json --data-dir data   # a CellSpec as JSON

GNU time is not installed everywhere; on Debian/Ubuntu: `apt-get install -y time`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

GNU_TIME = Path("/usr/bin/time")
_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


def parse_max_rss_bytes(time_output: str) -> int:
    match = _MAX_RSS.search(time_output)
    if match is None:
        raise ValueError("GNU time's output has no 'Maximum resident set size' line")
    return int(match.group(1)) * 1024


def recorded_rss_bytes(record: dict) -> int:
    """The record's CPU resident peak (on a GPU run peak_bytes is NVML's, the RSS is kept
    under cpu_peak_rss_bytes)."""
    memory = record["memory"]
    return memory["peak_bytes"] if memory["source"] == "cpu_rss" else memory["cpu_peak_rss_bytes"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="banking77", help="built-in task or task YAML file")
    parser.add_argument("--strategy", default="lora")
    parser.add_argument("--data-dir", default=os.environ.get("PEFT_ARENA_DATA_DIR"))
    parser.add_argument("--max-train-samples", type=int, default=300)
    parser.add_argument("--max-eval-samples", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--spec-file", help="run this CellSpec (JSON, as `spec` in a record) "
                        "instead of planning one from the options above")
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="largest accepted relative difference (default 0.10)")
    return parser.parse_args(argv)


def _spec(args: argparse.Namespace) -> dict:
    """The cell to run, as the JSON a cell process reads."""
    if args.spec_file:
        return json.loads(Path(args.spec_file).read_text(encoding="utf-8"))
    from peft_arena import api  # planning applies the preset and the strategy's defaults

    return api.plan_cells(tasks=[args.task], strategies=[args.strategy], model=args.model,
                          seeds=[0], flags={"epochs": args.epochs,
                                            "max_train_samples": args.max_train_samples,
                                            "max_eval_samples": args.max_eval_samples}
                          )[0].to_dict()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not GNU_TIME.is_file():
        print(f"GNU time is not installed ({GNU_TIME} is missing), so there is nothing to check "
              "against. Install it (Debian/Ubuntu: apt-get install -y time) and run again.",
              file=sys.stderr)
        return 2
    spec = _spec(args)
    with tempfile.TemporaryDirectory(prefix="peft-arena-rss-") as folder:
        spec_file, record_file = Path(folder, "spec.json"), Path(folder, "record.json")
        time_file = Path(folder, "time.txt")
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        command = [str(GNU_TIME), "-v", "-o", str(time_file), sys.executable, "-m",
                   "peft_arena.matrix.cell_process", str(spec_file), str(record_file),
                   args.data_dir or ""]
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            print(f"the cell failed (exit status {done.returncode}); see its output above",
                  file=sys.stderr)
            return 1
        from_time = parse_max_rss_bytes(time_file.read_text(encoding="utf-8"))
        recorded = recorded_rss_bytes(json.loads(record_file.read_text(encoding="utf-8")))
    ratio = recorded / from_time
    print(f"cell: {spec['task']} / {spec['strategy']} / {spec['model']}")
    print(f"record peak RSS:             {recorded / 2**20:10.1f} MiB")
    print(f"/usr/bin/time max RSS:       {from_time / 2**20:10.1f} MiB")
    print(f"ratio (record / time):       {ratio:10.3f}")
    agree = abs(ratio - 1) <= args.tolerance
    print(f"{'agree' if agree else 'DISAGREE'} within {args.tolerance:.0%}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
