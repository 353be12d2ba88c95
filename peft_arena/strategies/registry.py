"""The strategy registry: built-ins plus third-party ones from the entry point group."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from peft_arena.config.registry import Registry

if TYPE_CHECKING:
    from peft_arena.strategies.base import Strategy

ENTRY_POINT_GROUP = "peft_arena.strategies"
BUILTINS = ("full", "lora", "qlora", "ia3", "adalora", "loha")

strategies: Registry[type[Strategy]] = Registry("strategy")
_loaded = False


def load_strategies() -> Registry[type[Strategy]]:
    """Import the built-in modules (each registers itself) and any installed plug-ins."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTINS:
            import_module(f"peft_arena.strategies.{module}")
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
    return strategies
