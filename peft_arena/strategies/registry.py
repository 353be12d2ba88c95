"""The strategy registry: a container and nothing else, as PEFT's is. Filling it with the
built-in methods and the installed plug-ins is strategies/builtin.py's work (`load_strategies`).

A plug-in registers its strategies with `@strategies.register("name")` on a `Strategy`
subclass, or with `register_methods(path)` (strategies/methods.py) for a YAML file of its own
in the methods.yaml format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peft_arena.config.registry import Registry

if TYPE_CHECKING:
    from peft_arena.strategies.base import Strategy


class StrategyRegistry(Registry["type[Strategy]"]):
    """A registry whose entries learn their name from it: a strategy's name is written once,
    where it is registered."""

    def add(self, name: str, item: type[Strategy]) -> type[Strategy]:
        super().add(name, item)
        item.name = name
        return item


strategies = StrategyRegistry("strategy")
