"""Where peft-arena keeps what it caches between runs: one root, chosen by the environment.

    $PEFT_ARENA_CACHE, else $XDG_CACHE_HOME/peft-arena, else ~/.cache/peft-arena
        tokens/            tokenized splits (data.batching)
        peak_flops.json    the machine's measured matmul peak (measure.flops)
        inductor/          torch.compile's graphs and kernels (model.compiling)
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PEFT_ARENA_CACHE"


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "peft-arena"
    return Path(os.environ.get(CACHE_ENV, default))


def token_cache_dir() -> Path:
    return cache_root() / "tokens"


def peak_flops_file() -> Path:
    return cache_root() / "peak_flops.json"


def compile_cache_dir() -> Path:
    return cache_root() / "inductor"
