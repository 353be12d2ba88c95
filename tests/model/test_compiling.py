"""torch.compile of the repeated blocks (model.compiling): the same loss and gradients as
eager, dropout at its rate inside a compiled graph, and eager training whenever compiling is
off, refused or fails."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from peft_arena.config.spec import CellSpec
from peft_arena.model import compiling
from peft_arena.model.dropout import fast_dropout, use_fast_dropout
from peft_arena.model.loading import load_model
from peft_arena.strategies import load_strategies

LABELS = ["a", "b", "c"]


def _model(path, strategy: str) -> torch.nn.Module:
    """The tiny BERT wrapped by `strategy`, with the cell's dropout, in training mode. The last
    layer is left whole, so that both layers share one compiled graph (half the compiling)."""
    spec = CellSpec(model=str(path), task="synth", strategy=strategy)
    torch.manual_seed(0)
    model = load_strategies().get(strategy)(spec).wrap(
        load_model(str(path), LABELS, on_gpu=False), 10)
    use_fast_dropout(model)
    return model.train()


def _step(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor
          ) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # the same dropout masks on both sides (inductor falls back to aten)
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def _batch(length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(length)
    return (torch.randint(1000, 20000, (4, length), generator=generator),
            torch.randint(0, len(LABELS), (4,), generator=generator))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "lora", "ia3"])
def test_a_compiled_step_gives_the_eager_loss_and_gradients(tiny_bert, strategy):
    # Inductor draws its own random numbers unless told to call torch's: with torch's, both
    # sides drop the same units and the comparison covers dropout too.
    eager, compiled = _model(tiny_bert, strategy), _model(tiny_bert, strategy)
    with torch._inductor.config.patch(fallback_random=True), \
            compiling.compiled_for_training(compiled, "on", on_gpu=False,
                                            compute_dtype=torch.float32) as outcome:
        assert outcome.compiled, outcome.reason
        graphs = []
        for length in (12, 19):  # a second padded length: no new graph (dynamic shapes)
            graphs.append(counters["stats"]["unique_graphs"])
            ids, labels = _batch(length)
            eager_loss, eager_grads = _step(eager, ids, labels)
            loss, grads = _step(compiled, ids, labels)
            assert loss == pytest.approx(eager_loss, rel=1e-4)
            assert grads.keys() == eager_grads.keys() and grads
            for name, grad in grads.items():
                torch.testing.assert_close(grad, eager_grads[name], rtol=1e-3, atol=1e-5,
                                           msg=name)
    assert graphs[0] == graphs[1] == counters["stats"]["unique_graphs"]
    # Both layers share a graph, but under a PEFT method the first layer's input needs no
    # gradient (frozen embeddings), so that layer gets one of its own.
    assert outcome.graphs == (1 if strategy == "full" else 2)
    assert outcome.cache in ("hit", "miss", "partial") and outcome.seconds > 0
    assert not any("forward" in b.__dict__ for b in compiling.repeated_blocks(compiled))


@pytest.mark.slow
def test_compiled_dropout_drops_at_its_rate():
    torch.manual_seed(0)
    dropped = torch.compile(lambda x: fast_dropout(x, 0.1), dynamic=False)(torch.ones(400_000))
    assert abs((dropped == 0).float().mean().item() - 0.1) < 0.005
    assert abs(dropped.mean().item() - 1.0) < 0.01


def test_compile_off_and_auto_here_train_eagerly(tiny_bert):
    model = _model(tiny_bert, "lora")
    for setting in ("off", "auto"):
        with compiling.compiled_for_training(model, setting, on_gpu=False,
                                             compute_dtype=torch.float32) as outcome:
            assert not outcome.compiled and outcome.setting == setting
            assert outcome.reason.startswith(f"compile: {setting}")
            assert not any("forward" in block.__dict__
                           for block in compiling.repeated_blocks(model))


def test_a_failing_compile_prints_one_line_and_trains_eagerly(tiny_bert, monkeypatch, capsys):
    def broken_compile(function, **_):
        def call(*args, **kwargs):
            raise RuntimeError("simulated compiler failure\nsecond line")
        return call

    monkeypatch.setattr(compiling.torch, "compile", broken_compile)
    model, reference = _model(tiny_bert, "lora"), _model(tiny_bert, "lora")
    ids, labels = _batch()
    with compiling.compiled_for_training(model, "on", on_gpu=False,
                                         compute_dtype=torch.float32) as outcome:
        loss, grads = _step(model, ids, labels)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["torch.compile failed (RuntimeError: simulated compiler failure); "
                     "training eagerly"]
    assert not outcome.compiled and "simulated compiler failure" in outcome.reason
    reference_loss, reference_grads = _step(reference, ids, labels)
    assert loss == reference_loss
    assert all(torch.equal(g, reference_grads[n]) for n, g in grads.items())


def test_gradient_checkpointing_is_refused_with_one_line(tiny_bert, capsys):
    model = _model(tiny_bert, "full")
    with compiling.compiled_for_training(model, "on", on_gpu=False, compute_dtype=torch.float32,
                                         gradient_checkpointing=True) as outcome:
        assert not outcome.compiled and "gradient checkpointing" in outcome.reason
    assert capsys.readouterr().err.count("\n") == 1


def test_the_repeated_blocks_are_the_layers(tiny_bert):
    blocks = compiling.repeated_blocks(_model(tiny_bert, "full"))
    assert [type(b).__name__ for b in blocks] == ["BertLayer", "BertLayer"]
