"""Loading the strategies: the methods of methods.yaml plus third-party ones from the entry
point group `peft_arena.strategies`.

A plug-in's entry point names a module (or any object in it); loading it runs the module,
which registers its strategies in the registry (strategies/registry.py).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from peft_arena.strategies.methods import BUILTIN_METHODS, register_methods
from peft_arena.strategies.registry import StrategyRegistry, strategies

ENTRY_POINT_GROUP = "peft_arena.strategies"
_loaded = False


def load_strategies() -> StrategyRegistry:
    """Register the built-in methods and any installed plug-ins (once per process)."""
    global _loaded
    if not _loaded:
        _loaded = True
        register_methods(BUILTIN_METHODS)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
    return strategies
