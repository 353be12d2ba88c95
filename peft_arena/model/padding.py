"""Give every tokenizer a pad token and the padding side that classification needs.

Decoder tokenizers (Llama, Qwen base, Mistral, GPT-2) usually have no pad token, and their
classification heads then refuse batches ("Cannot handle batch sizes > 1 if no padding token
is defined"). The head reads each row's rightmost token that is not the pad token, so the pad
token must never be a row's real last token: the end-of-sequence token serves, unless the
tokenizer ends every sequence with it; then the unknown token does.
"""

from __future__ import annotations

from typing import Any

from peft_arena.common.errors import UserError

# Right padding keeps each real token at the position it has unpadded: decoders number
# positions 0, 1, ... whatever the attention mask says, so left padding would shift them and
# change the logits. The batching collator pads on the right too.
PADDING_SIDE = "right"


def _appends_eos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def pad_token_candidate(tokenizer: Any) -> str | None:
    """The token to pad with when the tokenizer names none: eos, else unk."""
    if tokenizer.eos_token is not None and not _appends_eos(tokenizer):
        return tokenizer.eos_token
    return tokenizer.unk_token


def prepare_padding(tokenizer: Any, model: str) -> Any:
    """Set a pad token where there is none, and the padding side; returns the tokenizer."""
    if tokenizer.pad_token is None:
        candidate = pad_token_candidate(tokenizer)
        if candidate is None:
            raise UserError(
                f"The tokenizer of model {model!r} has no pad token and no end-of-sequence or "
                f"unknown token to pad with; set pad_token in its tokenizer_config.json."
            )
        tokenizer.pad_token = candidate
    tokenizer.padding_side = PADDING_SIDE
    return tokenizer


def match_pad_token(config: Any, pad_token_id: int) -> None:
    """Tell the model which id pads, so its head reads each row's last real token. Nested
    configs (a multimodal model's text config) get it too."""
    config.pad_token_id = pad_token_id
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if text_config is not config:
        text_config.pad_token_id = pad_token_id
