"""LoRA initialisations that need a pass before training: PiSSA's, OLoRA's, MiCA's and LoftQ's
decompositions of the base weights, and EVA's and CorDA's statistics over training batches.

Each is the `lora` entry with another `init_lora_weights` (methods.yaml). `wrap` only fits the
config to the model; `prepare`, which the runner times as a phase of its own ("prepare"),
collects the statistics and builds the adapters, so the pass is counted in the cell's cost
apart from loading the model. PiSSA, OLoRA and LoftQ also change the base weights (the
adapter's starting part is taken out of them): the weight update of such a cell is the
merged weight minus the original checkpoint's, not B·A·scaling.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import torch
from peft import PeftConfig, get_peft_model
from peft.tuners.lora.config import CordaConfig, EvaConfig
from peft.tuners.lora.corda import preprocess_corda
from peft.tuners.lora.eva import initialize_lora_eva_weights

from peft_arena.strategies.base import Strategy

Batch = dict[str, torch.Tensor]


class DataInitLoRA(Strategy):
    prepares = True
    # Training batches the statistics are collected over (64 rows at batch size 32). CorDA's
    # paper calibrates on 256 samples, but on 2 CPU cores that pass alone took longer than a
    # short cell's training; EVA stops earlier still once its components converge.
    calibration_batches = 2

    def fitted_config(self, model: torch.nn.Module, total_steps: int) -> PeftConfig:
        config = super().fitted_config(model, total_steps)
        # A methods.yaml mapping stands for PEFT's sub-config dataclass.
        if isinstance(getattr(config, "eva_config", None), dict):
            config.eva_config = EvaConfig(**config.eva_config)
        if isinstance(getattr(config, "corda_config", None), dict):
            config.corda_config = CordaConfig(**config.corda_config)
        return config

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        self._config: PeftConfig = self.fitted_config(model, total_steps)
        return model  # the adapters are built in `prepare`

    def wrap_for_counting(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        # Same shapes as the initialised adapters (EVA keeps each layer's rank at rho=1);
        # a weightless model can take no decomposition.
        config = self.fitted_config(model, total_steps)
        method, config.init_lora_weights = config.init_lora_weights, True
        wrapped = get_peft_model(model, config)
        if method == "mica":  # MiCA trains A only: its B holds fixed singular vectors
            for name, param in wrapped.named_parameters():
                if "lora_B" in name:
                    param.requires_grad_(False)
        return wrapped

    def prepare(self, model: torch.nn.Module, batches: Iterable[Batch]) -> torch.nn.Module:
        config, method = self._config, self._config.init_lora_weights
        if method == "corda":
            preprocess_corda(model, config, run_model=lambda: self._forward(model, batches))
        wrapped = get_peft_model(model, config)
        if method == "eva":
            was_training = wrapped.training
            wrapped.eval()
            # EVA masks tokens by `labels` when a batch has them; a classifier's labels are
            # one per row, not per token, so they are left out.
            initialize_lora_eva_weights(wrapped, dataloader=list(self._inputs(model, batches)),
                                        show_progress_bar=False)
            wrapped.train(was_training)
        return wrapped

    def _inputs(self, model: torch.nn.Module, batches: Iterable[Batch]) -> Iterator[Batch]:
        device = next(model.parameters()).device
        for batch in islice(batches, self.calibration_batches):
            yield {k: v.to(device) for k, v in batch.items() if k != "labels"}

    def _forward(self, model: torch.nn.Module, batches: Iterable[Batch]) -> None:
        """CorDA's statistics: one row per forward pass (its hooks take a batch of one),
        padding left out."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for inputs in self._inputs(model, batches):
                for row in range(inputs["input_ids"].shape[0]):
                    keep = inputs["attention_mask"][row].bool()
                    model(**{k: v[row][keep].unsqueeze(0) for k, v in inputs.items()})
        model.train(was_training)


class FirstTokenIds(Strategy):
    """Trainable tokens with `token_indices` unset: the first 2,000 ids of the vocabulary."""

    first_ids = 2000

    def fitted_config(self, model: torch.nn.Module, total_steps: int) -> PeftConfig:
        config = super().fitted_config(model, total_steps)
        if getattr(config, "token_indices", None) is None:
            vocabulary = model.get_input_embeddings().num_embeddings
            config.token_indices = list(range(min(self.first_ids, vocabulary)))
        return config


class BuiltFromWeights(Strategy):
    """A tuner whose PEFT build reads the weights' values (AdaMSS's SVD subspaces, BOFT's and
    FRoD's initial factors, SHiRA's and UniLoRA's index draws) and so cannot be built on the
    dry run's weightless model: counting gives the skeleton random weights first (the memory
    of one copy of the model, briefly). The build itself is timed with loading the model."""

    def wrap_for_counting(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        with torch.device("cpu"):
            model = model.to_empty(device="cpu")
            with torch.no_grad():
                for param in model.parameters():
                    param.normal_(0.0, 0.02)
            return self.wrap(model, total_steps)
