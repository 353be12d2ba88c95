"""The strategy registry: the methods of methods.yaml plus third-party ones from the entry
point group `peft_arena.strategies`.

A plug-in's entry point names a module (or any object in it); loading it runs the module,
which registers its strategies with `@strategies.register("name")` on a `Strategy` subclass,
or with `register_methods(path)` for a YAML file of its own in the methods.yaml format.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from peft_arena.config.registry import Registry

if TYPE_CHECKING:
    from peft_arena.strategies.base import Strategy

ENTRY_POINT_GROUP = "peft_arena.strategies"


class StrategyRegistry(Registry["type[Strategy]"]):
    """A registry whose entries learn their name from it: a strategy's name is written once,
    where it is registered."""

    def add(self, name: str, item: type[Strategy]) -> type[Strategy]:
        super().add(name, item)
        item.name = name
        return item


strategies = StrategyRegistry("strategy")
_loaded = False


def load_strategies() -> StrategyRegistry:
    """Register the built-in methods and any installed plug-ins (once per process)."""
    global _loaded
    if not _loaded:
        _loaded = True
        from peft_arena.strategies.methods import BUILTIN_METHODS, register_methods

        register_methods(BUILTIN_METHODS)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
    return strategies
