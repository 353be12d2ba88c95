"""The model's repeated blocks under `torch.compile` while a cell trains, with a way back.

Inductor fuses what surrounds the matmuls: dropout's mask, compare and select, the residual
adds, LayerNorm and GELU, forward and backward. It compiles each repeated block of the model
(BERT's layers, a decoder's layers), not the whole model: the blocks share one graph (their
weights are the graph's inputs), so a 6-layer MiniLM compiles one layer's graph, plus one for
a last layer pruned to the first token (model/first_token.py), instead of the model's. Shapes
are dynamic, so a new padded length does not compile again.

A cell compiles on a tiny batch before its first step (its `compile` phase, so compiling is
counted in the cell), with the random number generator forked so that the cell's seeded draws
are as they would be eagerly, and the gradients of that batch dropped. Inductor keeps what it
built on disk (`config.paths.compile_cache_dir`), so a later cell of the same model and
method finds its graphs there: `cache` in the outcome says whether it did.

Only training runs the compiled blocks; evaluation (inference mode, SDPA attention) runs them
eagerly, so it never compiles again. Anything that goes wrong while compiling or in a compiled
call (no C compiler, a method dynamo cannot trace) prints one line and the cell trains eagerly.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from peft_arena.config.paths import compile_cache_dir
from peft_arena.model.four_bit import is_four_bit
from peft_arena.model.loading import transformers_model

# torch.compile's mode: "default" fuses element-wise work; "max-autotune" benchmarks matmul
# kernels at every shape, minutes on a 2-core CPU for nothing the fusion does not already give.
MODE = "default"
# The tiny batch compiled on before the first step: rows x tokens (dims of 0 or 1 would be
# specialised and compiled again at the real shapes).
WARM_UP_SHAPE = (2, 8)
CACHE_DIR_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


@dataclass
class CompileOutcome:
    """What ran, for the record's `resolved.compile`."""

    setting: str  # off | on | auto, as the spec asked
    compiled: bool  # the blocks trained compiled (False: eager, `reason` says why)
    reason: str | None = None  # why eager, when `setting` was not "off"
    mode: str | None = None
    scope: str | None = None  # what was compiled: "N x <block class>"
    seconds: float = 0.0  # the compile before the first step (the `compile` phase)
    # inductor's and AOTAutograd's on-disk caches during the cell: "hit" (every graph found),
    # "miss" (none), "partial", or None where nothing compiled
    cache: str | None = None
    cache_counts: dict[str, int] = field(default_factory=dict)
    graphs: int = 0  # graphs dynamo compiled during the cell (recompiles included)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_compile(setting: str, *, on_gpu: bool, compute_dtype: torch.dtype) -> tuple[bool, str]:
    """Whether to compile, and why not. `auto` compiles where it was measured to pay: nowhere
    yet (docs/speed.md): on a 2-core AVX512 Xeon in fp32 a compiled LoRA step was no faster and
    compiling took minutes; AMX (bf16) and GPU machines are unmeasured."""
    if setting == "off":
        return False, "compile: off"
    if setting == "auto":
        return False, "compile: auto (not measured to pay on this kind of machine)"
    return True, ""


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The longest run of same-class modules in one `nn.ModuleList`: a transformer's layers."""
    best: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best) \
                and len({type(block) for block in module}) == 1:
            best = list(module)
    return best if len(best) >= 2 else []


def _cache_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"fx_graph_hits": counters["inductor"]["fxgraph_cache_hit"],
            "fx_graph_misses": counters["inductor"]["fxgraph_cache_miss"],
            "autograd_hits": counters["aot_autograd"]["autograd_cache_hit"],
            "autograd_misses": counters["aot_autograd"]["autograd_cache_miss"],
            "graphs": counters["stats"]["unique_graphs"]}


def _cache_word(counts: dict[str, int]) -> str | None:
    hits = counts["fx_graph_hits"] + counts["autograd_hits"]
    misses = counts["fx_graph_misses"] + counts["autograd_misses"]
    if hits + misses == 0:
        return None
    return "hit" if misses == 0 else "miss" if hits == 0 else "partial"


class _BlockForward:
    """A block's forward while the cell trains: compiled in training with gradients on, its
    own forward otherwise. A failure in the compiled call sends every block back to eager."""

    def __init__(self, compiler: CompiledBlocks, eager: Callable[..., Any]) -> None:
        self.compiler, self.eager = compiler, eager
        self.compiled = torch.compile(eager, dynamic=True, mode=MODE)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiler.active and torch.is_grad_enabled() and self.compiler.training():
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # any failure: the eager call says whether it is real
                self.compiler.fall_back(error)
        return self.eager(*args, **kwargs)


class CompiledBlocks:
    """The model's repeated blocks with compiled forwards, until `restore`."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module], setting: str) -> None:
        self.model, self.blocks = model, blocks
        self.outcome = CompileOutcome(setting, compiled=True, mode=MODE,
                                      scope=f"{len(blocks)} x {type(blocks[0]).__name__}")
        self.active = True
        self._before = _cache_counts()
        self._own_forwards = {id(b): b.__dict__.get("forward") for b in blocks}
        for block in blocks:
            block.forward = _BlockForward(self, block.forward)

    def training(self) -> bool:
        return self.model.training

    def fall_back(self, error: BaseException) -> None:
        """One line, then eager for the rest of the cell."""
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        print(f"torch.compile failed ({type(error).__name__}: {message}); training eagerly",
              file=sys.stderr, flush=True)
        self.outcome.compiled = False
        self.outcome.reason = f"compile failed: {type(error).__name__}: {message}"
        self.restore()

    def restore(self) -> None:
        """Eager forwards back, and the cache counts of the cell into the outcome."""
        if not self.active:
            return
        self.active = False
        for block in self.blocks:
            own = self._own_forwards[id(block)]
            if own is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = own
        self.update_counts()

    def update_counts(self) -> None:
        now = _cache_counts()
        delta = {k: now[k] - self._before[k] for k in now}
        self.outcome.graphs = delta.pop("graphs")
        self.outcome.cache_counts = delta
        self.outcome.cache = _cache_word(delta)


def _warm_up(model: nn.Module) -> None:
    """One forward and backward on a tiny batch of the model's own inputs, so that the graphs
    are compiled before the first step; its gradients and random draws leave no trace."""
    config = transformers_model(model).config
    device = next(model.parameters()).device
    ids = torch.randint(0, min(int(config.vocab_size), 1000), WARM_UP_SHAPE, device=device)
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            outputs = model(input_ids=ids, attention_mask=torch.ones_like(ids))
            logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
            logits.float().sum().backward()
    finally:
        for param in model.parameters():
            param.grad = None
        model.train(was_training)


def _use_cache_dir() -> None:
    """Inductor's cache in peft-arena's cache folder, unless the user chose one. Importing
    PEFT already set the variable to torch's default (a folder under /tmp, lost on reboot)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get(CACHE_DIR_VARIABLE) in (None, default_cache_dir()):
        os.environ[CACHE_DIR_VARIABLE] = str(compile_cache_dir())


def _refusal(model: nn.Module, gradient_checkpointing: bool) -> str | None:
    if not repeated_blocks(model):
        return "no repeated blocks to compile"
    if gradient_checkpointing:
        return "gradient checkpointing recomputes blocks outside the compiled graphs"
    if any(is_four_bit(p) for p in model.parameters()):
        return "4-bit weights run through bitsandbytes' own kernels"
    return None


@contextmanager
def compiled_for_training(model: nn.Module, setting: str, *, on_gpu: bool,
                          compute_dtype: torch.dtype, gradient_checkpointing: bool = False,
                          timer_phase: Callable[[], Any] | None = None
                          ) -> Iterator[CompileOutcome]:
    """Inside the block, `model`'s repeated blocks train compiled where `setting` says so and
    compiling works; the outcome says what ran (its counts final once the block ends).
    `timer_phase`: the context the compile before the first step is timed in."""
    wanted, reason = resolve_compile(setting, on_gpu=on_gpu, compute_dtype=compute_dtype)
    refusal = _refusal(model, gradient_checkpointing) if wanted else None
    if not wanted or refusal:
        if refusal:
            print(f"torch.compile skipped: {refusal}; training eagerly", file=sys.stderr,
                  flush=True)
        yield CompileOutcome(setting, compiled=False, reason=refusal or reason)
        return
    _use_cache_dir()
    compiler = CompiledBlocks(model, repeated_blocks(model), setting)
    try:
        began = time.perf_counter()
        with timer_phase() if timer_phase else _nothing():
            try:
                _warm_up(model)
            except Exception as error:  # compiling the backward, or the tiny batch, failed
                if compiler.active:
                    compiler.fall_back(error)
                else:  # eager failed on the tiny batch too: the real batches decide
                    compiler.outcome.reason += " (the tiny batch failed eagerly too)"
        compiler.outcome.seconds = time.perf_counter() - began
        compiler.update_counts()  # so far; final when the block ends
        yield compiler.outcome
    finally:
        if compiler.active:
            compiler.restore()
        else:
            compiler.update_counts()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
