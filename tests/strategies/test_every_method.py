"""Every strategy takes a training step on tiny BERT and Llama classifiers (each family it
applies to), counts its trainable parameters as PEFT does, and the dry run's count on the
meta device is the trained model's."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from peft_arena.config.spec import CellSpec
from peft_arena.matrix.budget import count_cell_parameters
from peft_arena.measure.params import count_parameters
from peft_arena.model.first_token import compute_last_layer_for_first_token
from peft_arena.model.last_token import compute_last_layer_for_last_token
from peft_arena.model.loading import load_model, load_tokenizer
from peft_arena.strategies import load_strategies
from peft_arena.strategies.applicability import applies
from peft_arena.train.optim import build_optimizer
from tests.support.synthetic import KEYWORDS, synthetic_rows

MODELS = {"encoder": "tiny_bert", "decoder": "tiny_llama"}
REGISTERED = load_strategies().names()
# Every strategy runs on the encoder in the fast set; on the decoder only a few of each kind
# (low-rank, scaling, prompts, decoder-only, shape-fitted, a pass before training, an
# optimizer of its own), the rest with CI's slow set, to keep the fast set short.
FAST_ON_DECODER = {"lora", "ia3", "prompt_tuning", "prefix_tuning", "adaption_prompt", "vblora",
                   "road", "pissa", "lora_plus"}


def _cases():
    for family, fixture in MODELS.items():
        for name in REGISTERED:
            if not applies(load_strategies().get(name), family):
                continue
            slow = family == "decoder" and name not in FAST_ON_DECODER
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(name, fixture, id=f"{name}-{family}", marks=marks)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Ops on the tiny models take microseconds; more threads only synchronise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(model_dir, n=8) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(str(model_dir))
    rows = synthetic_rows(n, seed=5)
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": torch.tensor([r["label"] for r in rows])}


@pytest.mark.parametrize("name, fixture", list(_cases()))
def test_one_training_step_and_peft_s_own_count(name, fixture, request):
    model_dir = request.getfixturevalue(fixture)
    spec = CellSpec(model=str(model_dir), task="synth", strategy=name)
    strategy = load_strategies().get(name)(spec)
    torch.manual_seed(0)
    batch = _batch(model_dir)
    model = strategy.wrap(load_model(str(model_dir), KEYWORDS, on_gpu=False,
                                     **strategy.load_kwargs(torch.float32)), 10)
    if strategy.prepares:
        model = strategy.prepare(model, [batch])
    # The cell's own speed-ups, which must leave every method's forward intact (prefix
    # tuning's cached keys once broke the pruned last layer on padded batches).
    compute_last_layer_for_first_token(model) or compute_last_layer_for_last_token(model)
    optimizer = (strategy.optimizer(model, 1e-2, 0.0, None)
                 or build_optimizer(model, 1e-2, 0.0))
    trainable, total = count_parameters(model)
    if isinstance(model, PeftModel):  # PEFT's own count of the same wrapped model
        assert trainable == model.get_nb_trainable_parameters()[0], name
    assert 0 < trainable <= total
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss), name
    loss.backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert moved, f"{name}: no weight moved in a step"
    assert not moved & frozen, f"{name}: frozen weights moved: {sorted(moved & frozen)[:3]}"
    # The dry run builds the same adapters on the meta device, from the config alone.
    counted = count_cell_parameters(spec, num_labels=len(KEYWORDS))
    assert (counted.trainable, counted.total) == (trainable, total), name
