"""Which strategies apply to which model family, and why some PEFT methods apply to none.

Two families: `encoder` (BERT-like models with a masked-LM head type: BERT, RoBERTa,
DistilBERT, DeBERTa, MiniLM, ...) and `decoder` (causal LMs: Llama, Qwen2, Mistral, GPT-2,
SmolLM2, ...). A strategy's methods.yaml entry lists the families it cannot wrap under
`unsupported`, each with its reason. PEFT tuner types that cannot wrap a sequence classifier
at all are no strategy; `NOT_STRATEGIES` says why, so that asking for one names the reason
instead of "unknown strategy".

`--strategies all` is every registered strategy that applies to the model's family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from peft_arena.common.errors import UserError

if TYPE_CHECKING:
    from peft_arena.strategies.base import Strategy
    from peft_arena.strategies.registry import StrategyRegistry

FAMILIES = ("encoder", "decoder")
ALL = "all"

# PEFT 0.22 tuner types and LoRA variants that cannot wrap a plain sequence classifier
# (checked on tiny BERT and Llama classifiers).
NOT_STRATEGIES: dict[str, str] = {
    "multitask_prompt_tuning": "needs a task id per example (num_tasks prompts, one chosen per "
                               "row); a single-task classifier has none",
    "poly": "needs a task id per example to route between its skills",
    "xlora": "mixes LoRA adapters that were trained before; it trains none of its own",
    "cpt": "PEFT's CPTConfig only supports task_type CAUSAL_LM, not sequence classification",
    "qalora": "PEFT implements QA-LoRA for GPTQ-quantized layers only (no GPTQ kernel on CPU)",
    "shadow": "its forward returns a carrier object in place of the base model's output "
              "(a classifier fails with 'ShadowCarrier' object has no attribute 'view', on "
              "BERT and Llama alike); PEFT keeps no default targets for it either",
}


def family_of(model_type: str) -> str:
    """The family of a transformers model type (config.model_type)."""
    return "encoder" if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "decoder"


def applies(strategy: type[Strategy], family: str | None) -> bool:
    return family is None or family not in strategy.unsupported


def families(strategy: type[Strategy]) -> list[str]:
    """The families a strategy applies to."""
    return [f for f in FAMILIES if f not in strategy.unsupported]


def refuse_not_strategies(names: list[str]) -> None:
    """A one-line error for a PEFT method that cannot wrap a classifier."""
    for name in names:
        if name in NOT_STRATEGIES:
            raise UserError(f"Strategy {name!r} does not apply to sequence classification: "
                            f"{NOT_STRATEGIES[name]}.")


def for_model(names: list[str], registry: StrategyRegistry, model: str,
              family_of_model: Callable[[str], str | None]) -> list[str]:
    """`names` with `all` expanded to every strategy that applies to the model's family; a
    strategy named explicitly that does not apply is a one-line error. The family is looked
    up only when it matters (`all`, or a strategy with families it cannot wrap)."""
    family = None
    if ALL in names or any(registry.get(n).unsupported for n in names if n != ALL):
        family = family_of_model(model)
    chosen: list[str] = []
    for name in names:
        if name == ALL:
            chosen += [n for n in registry.names() if applies(registry.get(n), family)]
            continue
        strategy = registry.get(name)
        if not applies(strategy, family):
            assert family is not None
            raise UserError(f"Strategy {name!r} does not apply to {model} (a {family}): "
                            f"{strategy.unsupported[family]}.")
        chosen.append(name)
    return list(dict.fromkeys(chosen))
