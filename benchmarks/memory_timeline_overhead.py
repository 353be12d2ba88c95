"""Does sampling memory over time slow the training step? Times steps with and without the
sampler (measure.memory_timeline) side by side, in alternating blocks, so that load from
other work on the machine hits both alike, and prints the median step time of each and
their ratio.

    python benchmarks/memory_timeline_overhead.py
    python benchmarks/memory_timeline_overhead.py --strategy full --interval 0.01 --rounds 8

The model is the packaged MiniLM by default (a cell's own loading, strategy wrapping and
fast dropout), fed random token ids at a fixed shape.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PEFT_ARENA_QUIET", "1")

import torch

from peft_arena.config.spec import CellSpec
from peft_arena.measure.memory_timeline import DEFAULT_INTERVAL_S, MemoryTimeline
from peft_arena.measure.timing import PhaseTimer
from peft_arena.model.dropout import use_fast_dropout
from peft_arena.model.loading import load_model
from peft_arena.strategies import load_strategies
from peft_arena.train.optim import build_optimizer


def build(model_name: str, strategy_name: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    spec = CellSpec(model=model_name, task="overhead", strategy=strategy_name)
    strategy = load_strategies().get(strategy_name)(spec)
    model = strategy.wrap(load_model(model_name, ["a", "b", "c", "d"], on_gpu=False,
                                     **strategy.load_kwargs(torch.float32)), total_steps=1000)
    use_fast_dropout(model)
    model.train()
    return model, build_optimizer(model, spec.learning_rate, spec.weight_decay, None)


def step_times(model, optimizer, batch, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--strategy", default="lora")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="steps per block")
    parser.add_argument("--rounds", type=int, default=20, help="blocks of each variant")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S,
                        help="sampling interval in seconds (the cell's default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # What one sample costs on its own, the sampler's whole work every interval.
    probe = MemoryTimeline(PhaseTimer())
    start, n = time.perf_counter(), 2000
    for _ in range(n):
        probe.sample()
    per_sample = (time.perf_counter() - start) / n
    print(f"one sample ({', '.join(probe.readers)}): {per_sample * 1e6:.1f} us, "
          f"{per_sample / args.interval:.3%} of one core at one sample every "
          f"{args.interval * 1000:.0f} ms", flush=True)

    model, optimizer = build(args.model, args.strategy)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (args.batch, args.length),
                                        generator=generator),
             "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long),
             "labels": torch.randint(0, 4, (args.batch,), generator=generator)}
    step_times(model, optimizer, batch, 3)  # warm-up: allocator, kernels, optimizer state
    timer = PhaseTimer()
    times: dict[str, list[float]] = {"without sampler": [], "with sampler": []}
    paired = []  # per round: median step with / median step without, taken moments apart
    samples = 0
    for round_index in range(args.rounds):
        # Which variant goes first alternates, so a drift in load favours neither.
        order = (False, True) if round_index % 2 == 0 else (True, False)
        block = {}
        for sampled in order:
            if sampled:
                with timer.phase("train"), MemoryTimeline(timer,
                                                          interval_s=args.interval) as timeline:
                    block[sampled] = step_times(model, optimizer, batch, args.steps)
                samples += timeline.report()["samples"]
            else:
                block[sampled] = step_times(model, optimizer, batch, args.steps)
        times["with sampler"] += block[True]
        times["without sampler"] += block[False]
        paired.append(statistics.median(block[True]) / statistics.median(block[False]))
        print(f"  round {round_index + 1}/{args.rounds}: median step without "
              f"{statistics.median(block[False]) * 1000:.1f} ms, with "
              f"{statistics.median(block[True]) * 1000:.1f} ms, ratio {paired[-1]:.3f}",
              flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.model} {args.strategy}, batch {args.batch} x {args.length} tokens, "
          f"{args.rounds} alternating blocks of {args.steps} steps each, torch threads "
          f"{torch.get_num_threads()}, sampler every {args.interval * 1000:.0f} ms "
          f"({samples} samples taken)")
    for name, median in medians.items():
        spread = statistics.quantiles(times[name], n=4)
        print(f"  {name:16s} median step {median * 1000:8.1f} ms "
              f"(quartiles {spread[0] * 1000:.1f}-{spread[2] * 1000:.1f}, "
              f"fastest {min(times[name]) * 1000:.1f})")
    print(f"  ratio with/without of the medians: "
          f"{medians['with sampler'] / medians['without sampler']:.3f}; of the fastest steps: "
          f"{min(times['with sampler']) / min(times['without sampler']):.3f}; median of the "
          f"per-round ratios: {statistics.median(paired):.3f} "
          f"(quartiles {statistics.quantiles(paired, n=4)[0]:.3f}-"
          f"{statistics.quantiles(paired, n=4)[2]:.3f})")


if __name__ == "__main__":
    main()
