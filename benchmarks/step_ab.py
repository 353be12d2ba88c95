"""Training-step variants timed side by side: which change to the step pays on this machine.

Builds one model per variant (the packaged MiniLM by default, random token ids at a fixed
shape, peft-arena's precision), then times their steps in turns, variant after variant, so
that load from other work on the machine hits every variant alike, and prints the median
step time of each and its ratio to the first.

    python benchmarks/step_ab.py --strategy lora --variants arena,frozen-fp32,native-dropout
    python benchmarks/step_ab.py --strategy full --variants arena,compile --length 24,40

Variants: `arena` (the step as a cell trains it), `frozen-fp32` (frozen linear weights left in
fp32, so autocast casts them every call), `native-dropout` (PyTorch's dropout), `sdpa` (SDPA
attention in training, as transformers defaults to), `compile` (the model under
`torch.compile(dynamic=True)`; its compile time is printed apart), `compile-blocks` (the
model's repeated blocks compiled as a cell with `compile: on` trains them, model/compiling.py;
the compile and whether inductor's on-disk cache was hit are printed), `all-positions` (the
last layer computed for every position, not the first token only), `eager` (transformers'
eager attention with PyTorch's dropout on the attention probabilities; the rest as arena).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import ExitStack

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PEFT_ARENA_QUIET", "1")

import torch

from peft_arena.config.spec import CellSpec
from peft_arena.model.compiling import compiled_for_training
from peft_arena.model.dropout import use_fast_dropout
from peft_arena.model.first_token import compute_last_layer_for_first_token
from peft_arena.model.frozen_weights import frozen_linear_weights_in
from peft_arena.model.loading import load_model, transformers_model
from peft_arena.strategies import load_strategies
from peft_arena.train.optim import build_optimizer
from peft_arena.train.precision import resolve_precision

VARIANTS = ("arena", "frozen-fp32", "native-dropout", "sdpa", "compile", "compile-blocks",
            "all-positions", "eager")


class Variant:
    def __init__(self, name: str, strategy_name: str, model_name: str, precision) -> None:
        self.name, self.precision = name, precision
        torch.manual_seed(0)
        spec = CellSpec(model=model_name, task="profile", strategy=strategy_name)
        strategy = load_strategies().get(strategy_name)(spec)
        model = load_model(model_name, ["a", "b", "c", "d"], on_gpu=False,
                           attention="sdpa" if name == "sdpa" else None,
                           **strategy.load_kwargs(precision.compute_dtype))
        model = strategy.wrap(model, total_steps=1000)
        if name != "native-dropout":
            use_fast_dropout(model)
        if name == "eager":  # transformers' own eager attention, PyTorch's dropout in it
            transformers_model(model).set_attn_implementation("eager")
        if name != "all-positions":
            compute_last_layer_for_first_token(model)
        model.train()
        self.optimizer = build_optimizer(model, spec.learning_rate, 0.0)
        self.stack = ExitStack()
        self.stack.enter_context(frozen_linear_weights_in(
            model, torch.float32 if name == "frozen-fp32" else precision.compute_dtype))
        self.model = torch.compile(model, dynamic=True) if name == "compile" else model
        if name == "compile-blocks":
            outcome = self.stack.enter_context(compiled_for_training(
                model, "on", on_gpu=False, compute_dtype=precision.compute_dtype))
            print(f"{name}: compiled={outcome.compiled} {outcome.scope} in "
                  f"{outcome.seconds:.1f} s, cache {outcome.cache}"
                  f"{'' if outcome.compiled else ', ' + str(outcome.reason)}", flush=True)
        self.times: list[float] = []

    def step(self, ids: torch.Tensor, labels: torch.Tensor) -> float:
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=self.precision.compute_dtype,
                            enabled=self.precision.name != "fp32"):
            loss = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                              labels=labels).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="lora")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--variants", default="arena,frozen-fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", default="24",
                        help="Comma-separated sequence lengths, cycled step by step (dynamic "
                             "padding gives every batch its own).")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    precision = resolve_precision(args.precision)
    lengths = [int(n) for n in args.length.split(",")]
    batches = [(torch.randint(1000, 20000, (args.batch_size, n)),
                torch.randint(0, 4, (args.batch_size,))) for n in lengths]
    variants = [Variant(name, args.strategy, args.model, precision) for name in names]
    for variant in variants:  # warm-up, one step per shape (compiles the compiled one)
        began = time.perf_counter()
        for ids, labels in batches:
            variant.step(ids, labels)
        print(f"{variant.name}: warm-up {time.perf_counter() - began:.1f} s", flush=True)
    for round_ in range(args.rounds):
        ids, labels = batches[round_ % len(batches)]
        for variant in variants:
            variant.times.append(variant.step(ids, labels))
    base = statistics.median(variants[0].times)
    print(f"{args.strategy} {args.model}, batch {args.batch_size} x {args.length} tokens, "
          f"{precision.name}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    for variant in variants:
        median = statistics.median(variant.times)
        print(f"  {variant.name:15} {1000 * median:7.1f} ms a step  "
              f"{base / median:5.2f}x the speed of {variants[0].name}")


if __name__ == "__main__":
    main()
