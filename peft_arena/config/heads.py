"""Module names of the newly initialised classification head across architectures (BERT and
RoBERTa: classifier; DistilBERT: pre_classifier + classifier; decoders: score). PEFT keeps a
trainable copy under the same name (`classifier.modules_to_save.default`).

The optimizer gives these their own learning rate; quantized loading keeps them unquantized.
"""

from __future__ import annotations

HEAD_MODULE_NAMES = frozenset({"classifier", "pre_classifier", "score"})


def is_head_parameter(name: str) -> bool:
    return not HEAD_MODULE_NAMES.isdisjoint(name.split("."))
