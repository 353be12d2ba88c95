"""A generative example's prompt, rendered and tokenized apart from its completion.

A task's `PromptFormat` holds a template with one `{text}` placeholder (the user's text) and
an optional system message. Rendered through the tokenizer's chat template where it has one
(`chat: auto`, the default; `always` makes a missing one an error, `never` skips it), the
prompt ends with the template's assistant header, e.g. SmolLM2's `<|im_start|>assistant\\n`.
Without a chat template the prompt is the filled template and the answer follows after a
space.

Prompt and completion are tokenized apart and their ids concatenated, so that the boundary
between them can never merge into one token (with a plain "Answer:" template, BPE would
otherwise be free to join the colon and the answer's first characters). The completion ends
with the tokenizer's end-of-sequence token, so the model learns to stop.

Truncation cuts the user's text only: the template around it (its end names the task and
opens the answer) and the answer itself stay whole. An example whose template and answer
alone exceed `max_length` is a one-line error rather than a silent cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peft_arena.common.errors import UserError

PLACEHOLDER = "{text}"
CHAT_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Example:
    """One prompt -> completion pair. `text` is the user's part of the prompt, the only part
    truncation may cut. `messages`, for a chat-form example, are the turns before the answer;
    its last user turn's content is `text`."""

    text: str
    answer: str
    messages: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True)
class PromptFormat:
    template: str = PLACEHOLDER
    system: str | None = None
    chat: str = "auto"  # one of CHAT_MODES

    def __post_init__(self) -> None:
        if self.template.count(PLACEHOLDER) != 1:
            raise UserError(f"A prompt template needs exactly one {PLACEHOLDER} (where the "
                            f"example's text goes), not {self.template!r}.")
        if self.chat not in CHAT_MODES:
            raise UserError(f"chat_template must be one of {', '.join(CHAT_MODES)}, "
                            f"not {self.chat!r}.")

    def uses_chat(self, tokenizer: Any, *, required: bool = False) -> bool:
        """Whether prompts go through the tokenizer's chat template. `required`: chat-form
        examples, which have no other way to become a prompt."""
        has = bool(getattr(tokenizer, "chat_template", None))
        if (self.chat == "always" or required) and not has:
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            why = "the task's examples are chat messages" if required else \
                "the task asks for one (chat_template: always)"
            raise UserError(f"The tokenizer of {name!r} has no chat template, but {why}; "
                            f"use a chat model or set chat_template: never with a prompt "
                            f"template.")
        return (has and self.chat != "never") or required


def render(fmt: PromptFormat, example: Example, text: str, tokenizer: Any, chat: bool) -> str:
    """The prompt of `example` with `text` as its user text (the example's own, or a cut)."""
    if example.messages is not None:
        turns = [dict(turn) for turn in example.messages]
        last_user = max(i for i, turn in enumerate(turns) if turn["role"] == "user")
        turns[last_user]["content"] = text
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    user = fmt.template.replace(PLACEHOLDER, text)
    if not chat:
        return f"{fmt.system}\n\n{user}" if fmt.system else user
    turns = ([{"role": "system", "content": fmt.system}] if fmt.system else []) + \
        [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def completion_text(answer: str, chat: bool) -> str:
    """A plain prompt ends with the template ("Topic:"); the answer follows after a space,
    as text would. A chat prompt ends with the assistant header's newline."""
    return answer if chat else f" {answer}"


@dataclass
class Encoded:
    """Token ids of a split's prompts and completions, apart."""

    prompt_ids: list[np.ndarray]
    completion_ids: list[np.ndarray]
    truncated: int  # examples whose user text was cut to fit max_length
    chat: bool
    example_prompt: str  # the first example's rendered prompt, for the record
    answers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def fingerprint(self) -> str:
        """Changes with any token id of any example."""
        digest = hashlib.sha256()
        for ids in (*self.prompt_ids, *self.completion_ids):
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
            digest.update(b"|")
        return digest.hexdigest()[:16]

    @property
    def lengths(self) -> np.ndarray:
        """Prompt + completion tokens per example."""
        return np.fromiter((len(p) + len(c) for p, c in zip(self.prompt_ids, self.completion_ids,
                                                           strict=True)),
                           dtype=np.int64, count=len(self))


def _ids(tokenizer: Any, texts: list[str], *, specials: bool) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=specials, return_attention_mask=False,
                     return_token_type_ids=False)["input_ids"]


def completion_ids(tokenizer: Any, answers: Sequence[str], chat: bool) -> list[np.ndarray]:
    """Each answer's ids followed by the end-of-sequence id."""
    eos = tokenizer.eos_token_id
    if eos is None:  # checked first: a check with no answers still finds it
        raise UserError("The tokenizer has no end-of-sequence token; a generative task needs "
                        "one to learn where an answer stops.")
    encoded = _ids(tokenizer, [completion_text(a, chat) for a in answers], specials=False)
    return [np.asarray([*ids, eos], dtype=np.int64) for ids in encoded]


def check_label_tokens(tokenizer: Any, label_names: Sequence[str], chat: bool) -> None:
    """A label name that tokenizes to nothing could never be generated or scored."""
    for name, ids in zip(label_names, _ids(tokenizer, [completion_text(n, chat).strip()
                                                       for n in label_names], specials=False),
                         strict=True):
        if not ids:
            raise UserError(f"Label name {name!r} tokenizes to no tokens; give every label a "
                            f"name with visible text.")


def check_format(fmt: PromptFormat, tokenizer: Any, label_names: Sequence[str], *,
                 chat_form: bool = False) -> None:
    """What encoding a task's examples would refuse, checked before any training: a chat
    template asked for (or needed by chat messages) that the tokenizer lacks, no
    end-of-sequence token, a label name that tokenizes to nothing."""
    chat = fmt.uses_chat(tokenizer, required=chat_form)
    completion_ids(tokenizer, [], chat)
    check_label_tokens(tokenizer, label_names, chat)


def _cut(tokenizer: Any, text: str, keep: int) -> str:
    """The first `keep` tokens' worth of `text`, as text."""
    if keep <= 0:
        return ""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False,
                            return_offsets_mapping=True)["offset_mapping"]
        if keep >= len(offsets):
            return text
        return text[:offsets[keep - 1][1]]
    ids = _ids(tokenizer, [text], specials=False)[0]
    return tokenizer.decode(ids[:keep])


def encode(examples: Sequence[Example], fmt: PromptFormat, tokenizer: Any, max_length: int,
           *, where: str = "the task", answer_room: int | None = None) -> Encoded:
    """Prompt and completion ids of every example; a user text cut where the whole would
    exceed `max_length` tokens.

    Every prompt leaves the same `answer_room` tokens for its answer (by default the longest
    completion of `examples`): a cut that left room for each example's own answer would tell
    the model, from the prompt's length, how long that answer is (a trace of the label)."""
    chat_form = any(e.messages is not None for e in examples)
    chat = fmt.uses_chat(tokenizer, required=chat_form)
    # A chat template writes its own begin-of-text token where the model wants one; the
    # tokenizer's would double it.
    specials = not chat
    prompts = [render(fmt, e, e.text, tokenizer, chat) for e in examples]
    prompt_ids = [np.asarray(ids, dtype=np.int64)
                  for ids in _ids(tokenizer, prompts, specials=specials)]
    completions = completion_ids(tokenizer, [e.answer for e in examples], chat)
    if answer_room is None:
        answer_room = max((len(ids) for ids in completions), default=0)
    truncated = 0
    for i, example in enumerate(examples):
        reserved = max(answer_room, len(completions[i]))
        room = max_length - reserved
        if len(prompt_ids[i]) <= room:
            continue
        truncated += 1
        bare = _ids(tokenizer, [render(fmt, example, "", tokenizer, chat)], specials=specials)[0]
        keep = room - len(bare)
        if keep < 1:
            raise UserError(
                f"{where}: example {i + 1} needs {len(bare) + reserved} tokens for "
                f"its template and the longest answer alone, more than max_length {max_length} "
                f"leaves room for; raise max_length or shorten the template.")
        while True:
            ids = _ids(tokenizer, [render(fmt, example, _cut(tokenizer, example.text, keep),
                                          tokenizer, chat)], specials=specials)[0]
            # Cut text can tokenize differently at its new end: cut again until it fits.
            if len(ids) <= room or keep <= 0:
                break
            keep -= max(1, len(ids) - room)
        prompt_ids[i] = np.asarray(ids if len(ids) <= room else bare, dtype=np.int64)
    return Encoded(prompt_ids, completions, truncated, chat,
                   prompts[0] if prompts else "", [e.answer for e in examples])


def describe(fmt: PromptFormat, tokenizer: Any, encoded: Encoded) -> dict[str, Any]:
    """What the record keeps of the prompt: the task's template, whether (and which) chat
    template rendered it, and one rendered prompt."""
    template = getattr(tokenizer, "chat_template", None) if encoded.chat else None
    return {
        "template": fmt.template,
        "system": fmt.system,
        "chat_template": encoded.chat,
        "chat_template_sha256": (hashlib.sha256(template.encode()).hexdigest()[:16]
                                 if isinstance(template, str) else None),
        "example_prompt": encoded.example_prompt,
        "truncated_examples": encoded.truncated,
    }
