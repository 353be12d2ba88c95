"""Where a training step's time goes: a torch.profiler breakdown of one strategy's steps.

Runs a few training steps of the packaged MiniLM (or any model) on random token ids at a fixed
shape, in the precision and attention implementation peft-arena uses, and prints the top
operators by self time, grouped into matmuls, attention, dropout, normalisation and
activations, optimizer, and the rest, plus the measured step time and its model FLOP
utilisation against a bf16/fp32 matmul peak measured in the same process.

    python benchmarks/profile_step.py --strategy full --batch-size 32 --length 64
    python benchmarks/profile_step.py --strategy lora --batch-size 32 --length 64 --compile
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.profiler import profile

from peft_arena.config.spec import CellSpec
from peft_arena.model.compiling import compiled_for_training
from peft_arena.model.dropout import use_fast_dropout
from peft_arena.model.frozen_weights import frozen_linear_weights_in
from peft_arena.model.loading import load_model
from peft_arena.strategies import load_strategies
from peft_arena.train.precision import resolve_precision

# Operators grouped by name first: dropout's mask (drawn, compared, applied) and copies.
EXACT_GROUPS = {
    "aten::random_": "dropout masks (random_, ge, where)",
    "aten::ge": "dropout masks (random_, ge, where)",
    "aten::where": "dropout masks (random_, ge, where)",
    "aten::copy_": "copies (copy_)",
}
GROUPS = {
    "compiled (fused by inductor)": ("cpp_fused", "compiled", "graph_"),
    "matmul": ("mm", "addmm", "bmm", "linear", "matmul"),
    "attention kernels": ("scaled_dot_product", "softmax"),
    "dropout / RNG": ("dropout", "bernoulli", "rand", "native_dropout"),
    "layer norm, GELU": ("layer_norm", "gelu"),
    "optimizer": ("adam", "lerp", "addcdiv", "sqrt", "foreach"),
}


def matmul_peak(dtype: torch.dtype, size: int = 2048, seconds: float = 1.5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    runs, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - began)


def group_of(name: str) -> str:
    if name in EXACT_GROUPS:
        return EXACT_GROUPS[name]
    lowered = name.lower()
    for group, keys in GROUPS.items():
        if any(key in lowered for key in keys):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--top", type=int, default=0,
                        help="Also list this many operators with the most self time.")
    parser.add_argument("--frozen-fp32", action="store_true",
                        help="Leave frozen linear weights in fp32 (autocast casts them per call).")
    parser.add_argument("--native-dropout", action="store_true",
                        help="PyTorch's dropout instead of peft-arena's cheaper-RNG one.")
    parser.add_argument("--compile", action="store_true",
                        help="The repeated blocks under torch.compile, as a cell with "
                             "`compile: on` trains them (model/compiling.py).")
    args = parser.parse_args()

    precision = resolve_precision(args.precision)
    spec = CellSpec(model=args.model, task="profile", strategy=args.strategy)
    strategy = load_strategies().get(args.strategy)(spec)
    model = load_model(args.model, ["a", "b", "c", "d"], on_gpu=False,
                       **strategy.load_kwargs(precision.compute_dtype))
    model = strategy.wrap(model, total_steps=100)
    if not args.native_dropout:
        use_fast_dropout(model)  # as the runner does on CPU
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    ids = torch.randint(1000, 20000, (args.batch_size, args.length))
    labels = torch.randint(0, 4, (args.batch_size,))

    def step() -> None:
        with torch.autocast("cpu", dtype=precision.compute_dtype,
                            enabled=precision.name != "fp32"):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    frozen_dtype = torch.float32 if args.frozen_fp32 else precision.compute_dtype
    with frozen_linear_weights_in(model, frozen_dtype), \
            compiled_for_training(model, "on" if args.compile else "off", on_gpu=False,
                                  compute_dtype=precision.compute_dtype) as compiled:
        for _ in range(2):
            step()
        began = time.perf_counter()
        for _ in range(args.steps):
            step()
        step_s = (time.perf_counter() - began) / args.steps

        with profile() as prof:
            for _ in range(args.steps):
                step()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[group_of(event.key)] += event.self_cpu_time_total
    grand = sum(totals.values())

    # Training FLOPs per token: forward 2N; backward 2N for activation gradients plus 2 per
    # trainable weight for weight gradients. Embedding lookups are not matmuls: left out.
    weights = [(p.numel(), p.requires_grad) for n, p in model.named_parameters()
               if "embeddings" not in n]
    non_embedding = sum(n for n, _ in weights)
    trainable = sum(n for n, grad in weights if grad)
    tokens = args.batch_size * args.length
    flops = (4 * non_embedding + 2 * trainable) * tokens
    peak = matmul_peak(precision.compute_dtype)
    print(f"{args.strategy} {args.model} batch {args.batch_size} x {args.length} tokens, "
          f"{precision.name}, {torch.get_num_threads()} threads, "
          f"{'native' if args.native_dropout else 'fast'} dropout, "
          + (f"compiled ({compiled.scope}, {compiled.seconds:.0f} s, cache {compiled.cache})"
             if compiled.compiled else "eager"))
    print(f"step {step_s * 1000:.0f} ms, {tokens / step_s:.0f} tokens/s, "
          f"{flops / step_s / 1e9:.0f} GFLOP/s of {peak / 1e9:.0f} GFLOP/s matmul peak "
          f"= MFU {100 * flops / step_s / peak:.1f}%")
    for group, micros in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {group:20} {100 * micros / grand:5.1f}% of profiled CPU time")
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    for event in events[:args.top]:
        print(f"    {event.key[:40]:40} {100 * event.self_cpu_time_total / grand:5.1f}% "
              f"({event.count // args.steps} calls a step)")


if __name__ == "__main__":
    main()
