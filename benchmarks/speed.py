"""Speed benchmark: the usual Hugging Face Trainer recipe versus peft-arena, on the same cell.

Both sides get the same model, the same train and test examples, the same hyper-parameters
and seed. The recipe is the one public write-ups use: `padding="max_length"`, fp32, the HF
`Trainer`, tokenizing inside the run. peft-arena runs its own cell (dynamic padding, length
grouping, automatic mixed precision, on-disk token cache). Repetitions alternate between the
two so that machine noise hits both alike. Each side is timed from raw texts to test metrics.

    python benchmarks/speed.py --quick --data-dir ../shared/data
    python benchmarks/speed.py --task agnews --strategies full,lora,ia3 --seeds 0,1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
from transformers import Trainer, TrainingArguments

from peft_arena import api
from peft_arena.cell.data import load_cell_data, resolve_data_dir
from peft_arena.cell.modeling import load_model, load_tokenizer
from peft_arena.cell.optim import build_optimizer
from peft_arena.cell.runner import run_cell
from peft_arena.config.spec import CellSpec
from peft_arena.measure.metrics import classification_metrics
from peft_arena.strategies import load_strategies


@dataclass
class Outcome:
    seconds: float
    accuracy: float
    mfu: float | None = None


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, encodings: dict, labels: np.ndarray) -> None:
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: torch.tensor(v[i]) for k, v in self.encodings.items()}
        item["labels"] = torch.tensor(int(self.labels[i]))
        return item


def run_recipe(spec: CellSpec, data_dir, padded_length: int) -> Outcome:
    """The usual recipe, timed from raw texts (already split, as in peft-arena) to metrics."""
    data = load_cell_data(spec, data_dir)
    began = time.perf_counter()
    tokenizer = load_tokenizer(spec.model)

    def encode(texts: list[str]) -> dict:
        return dict(tokenizer(texts, padding="max_length", truncation=True,
                              max_length=padded_length))

    train = _Encoded(encode(data.train.texts), data.train.labels)
    test = _Encoded(encode(data.test.texts), data.test.labels)
    torch.manual_seed(spec.seed)
    strategy = load_strategies().get(spec.strategy)(spec)
    # The recipe's own choices: default (SDPA) attention and fp32 weights and math.
    model = load_model(spec.model, data.label_names, on_gpu=False, attention="sdpa",
                       **strategy.load_kwargs(torch.float32))
    steps = int(np.ceil(len(train) / spec.batch_size) * spec.epochs)
    model = strategy.wrap(model, steps)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=spec.batch_size,
            per_device_eval_batch_size=spec.eval_batch_size, num_train_epochs=spec.epochs,
            learning_rate=spec.learning_rate, weight_decay=spec.weight_decay,
            warmup_steps=int(spec.warmup_ratio * steps), lr_scheduler_type=spec.lr_scheduler,
            max_grad_norm=spec.max_grad_norm, seed=spec.seed, report_to="none",
            save_strategy="no", eval_strategy="no", logging_strategy="no", use_cpu=True,
            disable_tqdm=True,
        )
        # The same optimizer as peft-arena's (AdamW, the head at its own rate when the cell sets
        # one), so both sides train with the same hyper-parameters; Trainer adds the schedule.
        optimizer = build_optimizer(model, spec.learning_rate, spec.weight_decay,
                                    spec.head_learning_rate)
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          optimizers=(optimizer, None))
        trainer.train()
        predictions = trainer.predict(test).predictions
    logits = predictions[0] if isinstance(predictions, tuple) else predictions
    accuracy = classification_metrics(data.test.labels, logits.argmax(-1))["accuracy"]
    return Outcome(time.perf_counter() - began, accuracy)


def run_arena(spec: CellSpec, data_dir) -> Outcome:
    began = time.perf_counter()
    record = run_cell(spec, data_dir)
    mfu = (record.get("compute") or {}).get("mfu")
    return Outcome(time.perf_counter() - began, record["metrics"]["accuracy"], mfu)


def run_side(side: str, spec: CellSpec, data_dir, padded_length: int) -> Outcome:
    """Each side runs in a fresh process: Accelerate's state is per process, and neither side
    should inherit the other's warm caches or memory."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec.to_dict(), handle)
    try:
        command = [sys.executable, __file__, "--side", side, "--spec", handle.name,
                   "--padded-length", str(padded_length), "--data-dir", str(data_dir or "")]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return Outcome(**json.loads(done.stdout.strip().splitlines()[-1]))


def benchmark(specs: list[CellSpec], data_dir, repeats: int, padded_length: int) -> None:
    """`specs`: the same cell under different seeds. Accuracy is compared as the mean over
    seeds (one seed's dropout masks and batch order move it by a point or more); time as the
    median over every run."""
    recipe, arena = [], []
    for spec in specs:
        for _ in range(repeats):
            recipe.append(run_side("recipe", spec, data_dir, padded_length))
            arena.append(run_side("arena", spec, data_dir, padded_length))
    r_time = statistics.median(o.seconds for o in recipe)
    a_time = statistics.median(o.seconds for o in arena)
    mfus = [o.mfu for o in arena if o.mfu is not None]
    mfu = f"{100 * statistics.median(mfus):.1f}%" if mfus else "n/a"
    r_acc = statistics.mean(o.accuracy for o in recipe)
    a_acc = statistics.mean(o.accuracy for o in arena)
    spec = specs[0]
    print(f"{spec.task:10} {spec.strategy:8} recipe {r_time:7.1f} s  acc {r_acc:.4f} | "
          f"peft-arena {a_time:6.1f} s  acc {a_acc:.4f}  MFU {mfu} | "
          f"speed-up {r_time / a_time:5.2f}x  accuracy {100 * (a_acc - r_acc):+.1f} points",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="Banking77, LoRA, 2,000 train / 1,000 test, 1 epoch, seeds 0 and 1.")
    parser.add_argument("--task", default="banking77")
    parser.add_argument("--strategies", default="lora")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--seeds", default="0",
                        help="Comma-separated seeds; each side runs once per seed (and repeat).")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--padded-length", type=int, default=128,
                        help="The recipe's padding='max_length' length (write-ups use 128-512).")
    parser.add_argument("--data-dir", default=None,
                        help="Local task folders (else PEFT_ARENA_DATA_DIR, else the Hub).")
    parser.add_argument("--side", choices=["recipe", "arena"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one timed side, in its own process; prints its outcome as JSON
        spec = CellSpec.from_dict(json.loads(Path(args.spec).read_text()))
        data_dir = resolve_data_dir(args.data_dir or None)
        side = run_recipe(spec, data_dir, args.padded_length) if args.side == "recipe" \
            else run_arena(spec, data_dir)
        print(json.dumps(dataclasses.asdict(side)))
        return
    if args.quick:
        args.task, args.strategies, args.seeds, args.repeats = "banking77", "lora", "0,1", 1
    data_dir = resolve_data_dir(args.data_dir)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    print(f"torch threads {torch.get_num_threads()}; {args.train_samples} train / "
          f"{args.test_samples} test, {args.epochs:g} epoch(s), seeds {args.seeds}, recipe "
          f"padded to {args.padded_length}")
    for strategy in args.strategies.split(","):
        specs = api.plan_cells(
            tasks=[args.task], strategies=[strategy], model=args.model, seeds=seeds,
            flags={"epochs": args.epochs, "max_train_samples": args.train_samples,
                   "max_eval_samples": args.test_samples},
            sets=[f"max_length={args.padded_length}"],
        )
        benchmark(specs, data_dir, args.repeats, args.padded_length)


if __name__ == "__main__":
    main()
