"""Fine-tuning strategies, one short module each."""

from peft_arena.strategies.base import Strategy
from peft_arena.strategies.registry import load_strategies, strategies

__all__ = ["Strategy", "load_strategies", "strategies"]
