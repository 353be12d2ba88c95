"""The speed-ups a model gets before it trains, in one call: each leaves the cell's numbers as
they were and skips a model it does not fit.

- fast dropout on CPU (model/dropout.py), where torch's own dropout is slow;
- the last layer computed for the one position the head reads: the first token of an encoder
  (model/first_token.py) or the last token of a decoder (model/last_token.py).
"""

from __future__ import annotations

import torch

from peft_arena.model.dropout import use_fast_dropout
from peft_arena.model.first_token import compute_last_layer_for_first_token
from peft_arena.model.last_token import compute_last_layer_for_last_token


def apply_speed_ups(model: torch.nn.Module, *, on_gpu: bool) -> None:
    if not on_gpu:
        use_fast_dropout(model)
    compute_last_layer_for_first_token(model) or compute_last_layer_for_last_token(model)
