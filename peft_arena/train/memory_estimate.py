"""An estimate of a cell's training memory, from the model's config alone (no weights).

    weights      every parameter and buffer as the cell stores it: fp32 where it trains,
                 the frozen base in bf16 in bf16 runs of a PEFT strategy (fp32 otherwise),
                 4-bit NF4 linear weights under QLoRA (0.5 byte a value plus the per-block
                 scales: 1/64 byte with double quantization, 4/64 without)
    gradients    4 bytes per trainable parameter
    optimizer    AdamW's two fp32 moments: 8 bytes per trainable parameter
    autocast     the bf16/fp16 copies autocast keeps of trainable weights during a step:
                 2 bytes per trainable parameter in mixed precision
    activations  what the backward pass keeps of one batch of `batch_size` x `length`
                 tokens: per layer, by what the strategy trains (train/activations.py lists
                 the terms: frozen layers keep no inputs, LoRA's dropout keeps a copy and a
                 mask, grouped-query attention's keys and values are kept repeated), plus the
                 final norm's input and the head's; plus one layer's worth again, the
                 gradients the backward pass makes of a layer while its kept tensors live.
                 With gradient checkpointing: each layer's input, plus one layer's
                 activations recomputed at a time.
    logits       the head's output at the positions that carry a loss: for a generative
                 task the LM head runs at the completion tokens only (generation/loss.py),
                 batch x completion tokens x vocabulary, kept as the fp32 log-softmax the
                 cross entropy saves, with two gradients of its size at the backward pass's
                 start; for a classifier, batch x labels, the same way
    dequantized  QLoRA: the largest 4-bit weight de-quantized to the compute dtype, which
                 its forward and backward passes make one layer at a time
    loading      QLoRA: the load's own peak, every weight in full precision as the file
                 holds it beside the 4-bit weights made from it; the total is the larger of
                 this and training's

`length`: the longest sequence the cell trains on; the dry run takes `max_length`, which a
generative task's prompt plus completion never exceeds (generation/prompts.py cuts the
user's text to fit). Generative cells count the causal LM with its LM head (tied to the
embeddings where the config ties them).

What it leaves out: the CUDA context and the caching allocator's reserve (compare it with
torch's peak allocated memory, not NVML's), the allocator's freed-but-kept memory (on CPU
glibc's: measure/estimate_check.py compares with the memory in use too), evaluation batches,
the data and tokenizer, and on CPU the interpreter and its libraries, which dominate a small
model's resident memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from peft_arena.config.spec import CellSpec
from peft_arena.model.four_bit import nf4_bytes_per_value
from peft_arena.model.heads import (
    causal_lm_skeleton,
    check_classifiable,
    full_precision_module_names,
    load_config,
)
from peft_arena.model.heads import skeleton as build_skeleton
from peft_arena.model.last_token import LAST_TOKEN_CLASSIFIERS
from peft_arena.strategies import load_strategies
from peft_arena.train.activations import (
    LayerProfile,
    LayerShapes,
    layer_bytes_per_token,
    profile_layer,
    pruned_layer_bytes_per_token,
)
from peft_arena.train.memory_tools import base_dtype
from peft_arena.train.precision import resolve_precision

# Parameter shapes do not depend on the schedule; AdaLoRA only needs a valid step count.
_COUNTING_STEPS = 100
_GATED_MLP_NAMES = ("gate_proj", "gate_up_proj", "w1")
# Encoder classifiers whose last layer runs for the first token only (model/first_token.py).
_FIRST_TOKEN_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    autocast_bytes: int
    activations_bytes: int
    activations_checkpointed_bytes: int
    gradient_checkpointing: bool
    logits_bytes: int = 0
    dequantized_bytes: int = 0
    loading_bytes: int = 0
    length: int = 0  # the sequence length the activations are of

    @property
    def training_bytes(self) -> int:
        activations = (self.activations_checkpointed_bytes if self.gradient_checkpointing
                       else self.activations_bytes)
        return (self.weights_bytes + self.gradients_bytes + self.optimizer_bytes
                + self.autocast_bytes + activations + self.logits_bytes
                + self.dequantized_bytes)

    @property
    def total_bytes(self) -> int:
        return max(self.training_bytes, self.loading_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def _quantized_weights(model: torch.nn.Module, skip: list[str]) -> set[int]:
    """ids of the weights a 4-bit load quantizes: every linear layer outside `skip`."""
    return {id(module.weight) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and not any(name == s or name.startswith(f"{s}.") for s in skip)}


def _weights_bytes(model: torch.nn.Module, quantized: set[int], nf4_bytes: float,
                   frozen_bytes: int) -> int:
    total = 0.0
    for param in model.parameters():
        if param.requires_grad:
            total += param.numel() * 4
        elif id(param) in quantized:
            total += param.numel() * nf4_bytes
        else:
            total += param.numel() * frozen_bytes
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    return int(total)


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated layers: the longest ModuleList of the model."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return max(lists, key=len, default=[])  # type: ignore[arg-type, return-value]


def activation_bytes(config: Any, *, batch_size: int, length: int, element_bytes: int,
                     gated_mlp: bool, eager_attention: bool, checkpointed: bool,
                     profile: LayerProfile | None = None, pruned_last_layer: bool = False,
                     head_positions: int | None = None, head_trains: bool = True) -> int:
    """What the backward pass keeps of one batch (the module docstring's terms). `profile`:
    what the strategy trains in a layer (None: everything, as full fine-tuning).
    `head_positions`: the positions the head reads (default every one); `head_trains`:
    whether its input is kept."""
    shapes = LayerShapes.of(config)
    if profile is None:
        profile = LayerProfile(frozenset({"qkv", "o", "up", "down"}),
                               trained_rms_norms=2 if gated_mlp else 0)
    tokens = batch_size * length
    per_layer = tokens * layer_bytes_per_token(
        shapes, profile, length=length, element_bytes=element_bytes, gated_mlp=gated_mlp,
        eager_attention=eager_attention)
    last = (tokens * pruned_layer_bytes_per_token(shapes, profile, element_bytes)
            if pruned_last_layer else per_layer)
    head_input = (tokens if head_positions is None else head_positions) * shapes.hidden
    # the embedding output or the final norm's input, and the head's input
    outside = (tokens * shapes.hidden + (head_input if head_trains else 0)) * element_bytes
    if checkpointed:
        kept = shapes.layers * tokens * shapes.hidden * element_bytes + per_layer
    else:
        kept = (shapes.layers - 1) * per_layer + last
    return int(kept + per_layer + outside)  # + one layer's gradients in the backward pass


def logits_bytes(positions: int, width: int) -> int:
    """The head's output at `positions` positions of `width` classes: the fp32 log-softmax
    the cross entropy keeps, and two gradients of its size as the backward pass starts."""
    return 3 * positions * width * 4


def estimate_cell_memory(spec: CellSpec, num_labels: int, *, on_gpu: bool | None = None,
                         batch_size: int | None = None, trust_remote_code: bool = False,
                         generative: bool = False, length: int | None = None,
                         completion_tokens: int | None = None) -> MemoryEstimate:
    """The estimate for one cell, built on the meta device from the model's config.

    `batch_size`: the batch of one forward pass (default: the spec's; a cell that fell back
    to a smaller one passes that). `on_gpu` decides the attention kernel (default: whether
    this machine has CUDA). `generative`: a generation task's cell (the causal LM with its
    LM head); `completion_tokens`: the longest completion, eos included, whose positions
    carry the loss (default: every position, an upper bound). `length`: the longest
    sequence trained on (default `max_length`).
    """
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    strategy = load_strategies().get(spec.strategy)(spec)
    precision = resolve_precision(spec.precision)
    config = load_config(spec.model, trust_remote_code=trust_remote_code, num_labels=num_labels)
    if not generative:
        check_classifiable(spec.model, config)
    quantization = strategy.load_kwargs(precision.compute_dtype).get("quantization_config")
    quantized: set[int] = set()
    double_quant = False
    # Built and wrapped in one meta-device context: AdaLoRA's buffers stay frozen then.
    with torch.device("meta"):
        model = (causal_lm_skeleton(config, trust_remote_code=trust_remote_code) if generative
                 else build_skeleton(config, trust_remote_code=trust_remote_code))
        architecture = type(model).__name__
        if getattr(quantization, "load_in_4bit", False):
            quantized = _quantized_weights(model, full_precision_module_names(model))
            double_quant = bool(quantization.bnb_4bit_use_double_quant)
        unwrapped_bytes = sum(p.numel() for p in model.parameters())
        largest_quantized = max((p.numel() for p in model.parameters() if id(p) in quantized),
                                default=0)
        gated = any(name.endswith(_GATED_MLP_NAMES) for name, _ in model.named_modules())
        model = strategy.wrap_for_counting(model, _COUNTING_STEPS)
    frozen = base_dtype(strategy.peft_config_class is not None, precision.name)
    frozen_bytes = torch.tensor([], dtype=frozen).element_size()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    mixed = precision.name != "fp32"
    element_bytes = 2 if mixed else 4
    batch = batch_size or spec.batch_size
    length = length or spec.max_length
    layers = _decoder_layers(model)
    profile = profile_layer(layers[0]) if len(layers) else None
    pruned = (architecture in LAST_TOKEN_CLASSIFIERS
              or (not generative and config.model_type in _FIRST_TOKEN_MODEL_TYPES))
    if generative:
        positions = batch * min(completion_tokens or length, length)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") \
            else None
        head_trains = bool(head is not None and head.weight.requires_grad)
        width = LayerShapes.of(config).vocab
    else:  # a pruned classifier's head reads one position a row
        positions, head_trains, width = (batch if pruned else None), True, num_labels
    activations = {
        checkpointed: activation_bytes(
            config, batch_size=batch, length=length, element_bytes=element_bytes,
            gated_mlp=gated, eager_attention=not on_gpu, checkpointed=checkpointed,
            profile=profile, pruned_last_layer=pruned, head_positions=positions,
            head_trains=head_trains)
        for checkpointed in (False, True)}
    weights = _weights_bytes(model, quantized, nf4_bytes_per_value(double_quant), frozen_bytes)
    return MemoryEstimate(
        weights_bytes=weights,
        gradients_bytes=4 * trainable,
        optimizer_bytes=8 * trainable,
        autocast_bytes=2 * trainable if mixed else 0,
        activations_bytes=activations[False],
        activations_checkpointed_bytes=activations[True],
        gradient_checkpointing=spec.gradient_checkpointing,
        logits_bytes=logits_bytes(positions if positions is not None else batch, width),
        dequantized_bytes=largest_quantized * element_bytes,
        # The load reads every weight in full precision before bitsandbytes packs it.
        loading_bytes=(unwrapped_bytes * frozen_bytes + weights) if quantized else 0,
        length=length,
    )
