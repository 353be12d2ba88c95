"""Speed benchmark: peft-arena against two Hugging Face Trainer recipes, on the same cell.

Three sides get the same model, the same train and test examples, the same hyper-parameters,
seed and optimizer (AdamW, fused, the head at its own rate when the cell sets one):

- `recipe`: the one public write-ups use: `padding="max_length"` to the task's maximum
  length, fp32, the HF `Trainer`, tokenizing inside the run.
- `tuned`: the recipe a performance-minded user writes: `DataCollatorWithPadding` (each batch
  padded to its own longest example), `train_sampling_strategy="group_by_length"` (the
  length grouping transformers 5 offers; it groups evaluation batches too), bf16 autocast
  exactly where peft-arena's `auto` precision picks it, the same evaluation batch size.
- `arena`: peft-arena's own cell (see docs/speed.md).

A generative task (`--task agnews-gen`) compares against TRL's `SFTTrainer` instead, the
usual way and the tuned way (benchmarks/sft_recipes.py; TRL is the `bench` extra:
`pip install -e ".[bench]"`), on the same prompt -> completion rows, every side scored by
the cell's greedy decoding; its ratios are of training time (see docs/speed.md).

Each side runs in a fresh process, and the sides alternate seed by seed so that machine noise
hits all of them alike. Each is timed from reading the task's files to test metrics.
peft-arena's on-disk caches (token ids, the machine's matmul peaks) stay as a user's would:
warm after the first run of the same texts or machine (tokenizing is under 1 s at these sizes).

    python benchmarks/speed.py --quick --data-dir ../shared/data
    python benchmarks/speed.py --tasks imdb,agnews,banking77 --strategies full,lora,ia3 \
        --seeds 0,1 --data-dir ../shared/data
    python benchmarks/speed.py --model smollm2 --task agnews-gen --train-samples 400 \
        --test-samples 200 --seeds 0,1 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PEFT_ARENA_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from peft_arena import api
from peft_arena.cell.entry import run_cell
from peft_arena.common.cpu_features import cpu_model
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.data.loading import load_cell_data, resolve_data_dir
from peft_arena.measure.metrics import classification_metrics
from peft_arena.model.loading import load_model, load_tokenizer
from peft_arena.strategies import load_strategies
from peft_arena.train.optim import build_optimizer
from peft_arena.train.precision import resolve_precision

SIDES = ("recipe", "tuned", "arena")

# `--quick` per model: one cell and two seeds, sized to finish in minutes on a 2-core CPU.
# SmolLM2 (30 layers, 134.5M parameters) costs about 6x MiniLM per token: AG News, where a
# decoder's LoRA lands far above chance within a few hundred examples, with fewer of them.
QUICK = {
    "minilm": {"tasks": "banking77", "strategies": "lora", "seeds": "0,1",
               "train_samples": 2000, "test_samples": 1000},
    "smollm2": {"tasks": "agnews", "strategies": "lora", "seeds": "0,1",
                "train_samples": 400, "test_samples": 200},
}


@dataclass
class Outcome:
    seconds: float
    accuracy: float
    mfu: float | None = None
    # achieved FLOP/s over the matmul rate at the model's own shapes (compute.mfu_model_gemm)
    ceiling_share: float | None = None
    train_seconds: float | None = None  # the training loop alone (arena: with validation)
    test_seconds: float | None = None  # predicting the test split


class _Encoded(torch.utils.data.Dataset):
    """Tokenizer output as a map-style dataset of dicts (lists when unpadded)."""

    def __init__(self, encodings: dict, labels: np.ndarray, as_tensors: bool) -> None:
        self.encodings, self.labels, self.as_tensors = encodings, labels, as_tensors

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        if self.as_tensors:
            item = {k: torch.tensor(v) for k, v in item.items()}
        item["labels"] = int(self.labels[i])
        return item


def run_trainer(spec: CellSpec, data_dir, tuned: bool) -> Outcome:
    """The usual recipe (`tuned=False`) or the tuned one, timed from the files to metrics."""
    began = time.perf_counter()  # as for the arena cell: reading the task's files counts
    data = load_cell_data(spec, data_dir)
    precision = resolve_precision(spec.precision) if tuned else resolve_precision("fp32")
    tokenizer = load_tokenizer(spec.model)

    def encode(texts: list[str]) -> dict:
        padding = False if tuned else "max_length"
        return dict(tokenizer(texts, padding=padding, truncation=True,
                              max_length=spec.max_length))

    train = _Encoded(encode(data.train.texts), data.train.labels, as_tensors=not tuned)
    test = _Encoded(encode(data.test.texts), data.test.labels, as_tensors=not tuned)
    torch.manual_seed(spec.seed)
    strategy = load_strategies().get(spec.strategy)(spec)
    # Both recipes keep transformers' default attention (SDPA) and fp32 weights.
    model = load_model(spec.model, data.label_names, on_gpu=False, attention="sdpa",
                       **strategy.load_kwargs(precision.compute_dtype))
    steps = int(np.ceil(len(train) / spec.batch_size) * spec.epochs)
    model = strategy.wrap(model, steps)
    tuning = {"train_sampling_strategy": "group_by_length",
              "bf16": precision.name == "bf16", "fp16": precision.name == "fp16"} if tuned else {}
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=spec.batch_size,
            per_device_eval_batch_size=spec.eval_batch_size, num_train_epochs=spec.epochs,
            learning_rate=spec.learning_rate, weight_decay=spec.weight_decay,
            warmup_steps=int(spec.warmup_ratio * steps), lr_scheduler_type=spec.lr_scheduler,
            max_grad_norm=spec.max_grad_norm, seed=spec.seed, report_to="none",
            save_strategy="no", eval_strategy="no", logging_strategy="no", use_cpu=True,
            disable_tqdm=True, **tuning,
        )
        # peft-arena's optimizer (fused AdamW, the head at its own rate when the cell sets
        # one), so every side trains with the same hyper-parameters; Trainer adds the schedule.
        optimizer = build_optimizer(model, spec.learning_rate, spec.weight_decay,
                                    spec.head_learning_rate)
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          data_collator=DataCollatorWithPadding(tokenizer) if tuned else None,
                          optimizers=(optimizer, None))
        train_began = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - train_began
        # Length-grouped evaluation shuffles the test examples: score against the labels the
        # prediction loop returns, in its own order.
        test_began = time.perf_counter()
        predicted = trainer.predict(test)
        test_seconds = time.perf_counter() - test_began
    logits = predicted.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    accuracy = classification_metrics(predicted.label_ids, logits.argmax(-1))["accuracy"]
    return Outcome(time.perf_counter() - began, accuracy, train_seconds=train_seconds,
                   test_seconds=test_seconds)


def is_generative(spec: CellSpec) -> bool:
    return resolve_task(spec.task_source).kind == "generation"


def run_arena(spec: CellSpec, data_dir) -> Outcome:
    began = time.perf_counter()
    record = run_cell(spec, data_dir)
    compute = record.get("compute") or {}
    phases = record["time"]["phases"]
    mfu = compute.get("mfu")
    mfu_gemm = compute.get("mfu_model_gemm")
    compile_s = phases.get("compile_s", 0.0)
    if is_generative(spec):
        # The training loop alone (its validation pass, decoding the validation split, is
        # timed apart; the TRL sides validate nothing), and the test split's decoding.
        return Outcome(time.perf_counter() - began, record["metrics"]["accuracy"], mfu,
                       mfu_gemm, train_seconds=phases["train_s"] + compile_s,
                       test_seconds=phases["decode_s"])
    return Outcome(time.perf_counter() - began, record["metrics"]["accuracy"], mfu, mfu_gemm,
                   train_seconds=phases["train_s"] + phases.get("validate_s", 0.0) + compile_s,
                   test_seconds=phases["eval_s"])


def run_peer(spec: CellSpec, data_dir, tuned: bool) -> Outcome:
    """The Trainer recipe of a classification task, TRL's SFTTrainer of a generative one."""
    if not is_generative(spec):
        return run_trainer(spec, data_dir, tuned)
    from sft_recipes import run_sft  # benchmarks/ is the script's own folder

    return Outcome(**run_sft(spec, data_dir, tuned))


def run_side(side: str, spec: CellSpec, data_dir) -> Outcome:
    """Each side runs in a fresh process: Accelerate's state is per process, and no side
    should inherit another's warm caches or memory."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec.to_dict(), handle)
    try:
        command = [sys.executable, __file__, "--side", side, "--spec", handle.name,
                   "--data-dir", str(data_dir or "")]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        # A negative status is a signal: -9 is most often the kernel's out-of-memory killer.
        raise SystemExit(f"{side} failed (exit status {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return Outcome(**json.loads(done.stdout.strip().splitlines()[-1]))


def _spread(values: list[float]) -> str:
    return f"±{statistics.stdev(values):.3f}" if len(values) > 1 else ""


def benchmark(specs: list[CellSpec], data_dir, repeats: int, sides: tuple[str, ...]) -> None:
    """`specs`: the same cell under different seeds. Accuracy is compared as the mean over
    seeds (one seed's dropout masks and batch order move it by a point or more), with the
    standard deviation over seeds; time as the median over every run."""
    outcomes: dict[str, list[Outcome]] = {side: [] for side in sides}
    for spec in specs:
        for _ in range(repeats):
            for side in sides:
                outcomes[side].append(run_side(side, spec, data_dir))
    times = {s: statistics.median(o.seconds for o in runs) for s, runs in outcomes.items()}
    accuracy = {s: [o.accuracy for o in runs] for s, runs in outcomes.items()}
    def median_share(field: str) -> str:
        shares = [getattr(o, field) for o in outcomes.get("arena", [])
                  if getattr(o, field) is not None]
        return f"{100 * statistics.median(shares):.1f}%" if shares else "n/a"

    mfu, ceiling = median_share("mfu"), median_share("ceiling_share")

    def median_of(side: str, field: str) -> str:
        values = [getattr(o, field) for o in outcomes[side] if getattr(o, field) is not None]
        return f"{statistics.median(values):.1f}" if values else "?"

    tested = "decode" if is_generative(specs[0]) else "test"
    parts = [f"{side} {times[side]:6.1f} s (train {median_of(side, 'train_seconds')}, {tested} "
             f"{median_of(side, 'test_seconds')}) acc {statistics.mean(accuracy[side]):.4f}"
             f"{_spread(accuracy[side])}" for side in sides]
    spec = specs[0]
    if is_generative(spec):  # the training loops compared (see run_arena)
        times = {s: statistics.median(o.train_seconds for o in runs)
                 for s, runs in outcomes.items()}
    ratios = [f"{side}/arena {times[side] / times['arena']:5.2f}x" for side in sides
              if side != "arena" and "arena" in times]
    print(f"{spec.task:10} {spec.strategy:5} | " + " | ".join(parts)
          + f" | MFU {mfu}, {ceiling} of the model-shape ceiling | "
          + "  ".join(ratios), flush=True)
    if is_generative(spec):
        for ratio in ratios:
            print(f"{spec.task} {spec.strategy} training time {ratio}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="One cell, seeds 0 and 1, 1 epoch: for MiniLM (and any model "
                             "without its own entry) Banking77 LoRA, 2,000 train / 1,000 "
                             "test; for smollm2 AG News LoRA, 400 / 200.")
    parser.add_argument("--tasks", "--task", dest="tasks", default="banking77",
                        help="Comma-separated tasks, each at its own maximum length.")
    parser.add_argument("--strategies", default="lora")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--seeds", default="0",
                        help="Comma-separated seeds; each side runs once per seed (and repeat).")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sides", default=",".join(SIDES),
                        help="Which of recipe,tuned,arena to run (arena is the reference).")
    parser.add_argument("--data-dir", default=None,
                        help="Local task folders (else PEFT_ARENA_DATA_DIR, else the Hub).")
    parser.add_argument("--compile", choices=("off", "on", "auto"), default="auto",
                        help="The arena cell's `compile` setting (model/compiling.py).")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one timed side, in its own process; prints its outcome as JSON
        spec = CellSpec.from_dict(json.loads(Path(args.spec).read_text()))
        data_dir = resolve_data_dir(args.data_dir or None)
        side = run_arena(spec, data_dir) if args.side == "arena" \
            else run_peer(spec, data_dir, tuned=args.side == "tuned")
        print(json.dumps(dataclasses.asdict(side)))
        return
    if args.quick:
        for name, value in QUICK.get(args.model, QUICK["minilm"]).items():
            setattr(args, name, value)
        args.repeats = 1
    data_dir = resolve_data_dir(args.data_dir)
    generative = [task for task in args.tasks.split(",") if resolve_task(task).kind == "generation"]
    if generative and importlib.util.find_spec("trl") is None:
        print(f"{', '.join(generative)}: a generative task is compared against TRL's "
              f"SFTTrainer, and trl is not installed; run pip install -e \".[bench]\".",
              file=sys.stderr)
        raise SystemExit(2)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    sides = tuple(side for side in SIDES if side in args.sides.split(","))
    threads = os.environ.get("OMP_NUM_THREADS")
    print(f"$ {'OMP_NUM_THREADS=' + threads + ' ' if threads else ''}python "
          f"{' '.join(sys.argv)}", flush=True)
    print(f"{cpu_model()} ({platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, auto precision {resolve_precision().name}; "
          f"{args.train_samples} train / {args.test_samples} test, {args.epochs:g} epoch(s), "
          f"seeds {args.seeds}; times are medians, accuracies mean ± sd over seeds", flush=True)
    for task in args.tasks.split(","):
        for strategy in args.strategies.split(","):
            specs = api.plan_cells(
                tasks=[task], strategies=[strategy], model=args.model, seeds=seeds,
                flags={"epochs": args.epochs, "max_train_samples": args.train_samples,
                       "max_eval_samples": args.test_samples,
                       # The recipes measure no retention: neither does the timed cell (on
                       # SmolLM2 its probe pass alone is about a minute).
                       "measure_retention": False, "compile": args.compile},
            )
            benchmark(specs, data_dir, args.repeats, sides)


if __name__ == "__main__":
    main()
