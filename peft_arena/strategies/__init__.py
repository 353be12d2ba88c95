"""Fine-tuning strategies: entries of methods.yaml, plus a short module for a method with hooks."""

from peft_arena.strategies.base import Strategy
from peft_arena.strategies.registry import load_strategies, strategies

__all__ = ["Strategy", "load_strategies", "strategies"]
