"""Every strategy trains: a few optimizer steps lower the loss on a tiny learnable task."""

from __future__ import annotations

import pytest
import torch

from peft_arena.cell.modeling import count_parameters, load_model, load_tokenizer
from peft_arena.config.spec import CellSpec
from peft_arena.strategies import load_strategies
from tests.conftest import KEYWORDS, synthetic_rows

STRATEGIES = ["full", "lora", "qlora", "ia3", "adalora", "loha"]


def _batch(model_dir, n=24):
    tokenizer = load_tokenizer(str(model_dir))
    rows = synthetic_rows(n, seed=3)
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([r["label"] for r in rows])
    return dict(batch)


def _train(model_dir, strategy_name, steps=30):
    strategy_cls = load_strategies().get(strategy_name)
    # Tiny random models need larger steps than the real defaults to move within a few steps.
    lr = 1e-2
    spec = CellSpec(model=str(model_dir), task="synth", strategy=strategy_name, learning_rate=lr)
    strategy = strategy_cls(spec)
    torch.manual_seed(0)
    model = load_model(str(model_dir), KEYWORDS, on_gpu=False,
                       **strategy.load_kwargs(torch.float32))
    model = strategy.wrap(model, total_steps=steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = _batch(model_dir)
    model.eval()  # compare losses without dropout noise
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(**batch).logits, batch["labels"])
    model.train()
    for step in range(1, steps + 1):
        model(**batch).loss.backward()
        optimizer.step()
        strategy.on_step_end(model, step)
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(**batch).logits, batch["labels"])
    return model, before.item(), after.item()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch", ["tiny_bert", "tiny_roberta"])
def test_strategy_lowers_loss(strategy, arch, request):
    model_dir = request.getfixturevalue(arch)
    model, before, after = _train(model_dir, strategy)
    assert after < before * 0.9, f"{strategy} on {arch}: loss {before:.4f} -> {after:.4f}"
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    if strategy != "full":
        assert trainable < total / 2


def test_adalora_reallocates_ranks(tiny_bert):
    """Without update_and_allocate every step AdaLoRA silently stays plain LoRA at init_r."""
    model, _, _ = _train(tiny_bert, "adalora", steps=30)
    pattern = model.peft_config["default"].rank_pattern
    assert pattern, "update_and_allocate never produced a rank pattern"
    ranks = [sum(mask) for mask in pattern.values()]
    init_r = model.peft_config["default"].init_r
    assert min(ranks) < init_r, f"no rank was pruned: {ranks}"
    # The record keeps the final rank of every adapted module, the same ranks PEFT holds.
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy="adalora")
    state = load_strategies().get("adalora")(spec).final_state(model)
    assert state["reallocated"] and state["init_r"] == init_r
    assert sorted(state["rank_pattern"].values()) == sorted(ranks)
    assert "bert.encoder.layer.0.attention.self.query" in state["rank_pattern"]


def test_only_adalora_reports_a_final_state(tiny_bert):
    model, _, _ = _train(tiny_bert, "lora", steps=1)
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy="lora")
    assert load_strategies().get("lora")(spec).final_state(model) is None


def test_qlora_counts_like_lora(tiny_bert):
    lora, _, _ = _train(tiny_bert, "lora", steps=1)
    qlora, _, _ = _train(tiny_bert, "qlora", steps=1)
    assert count_parameters(qlora) == count_parameters(lora)
    assert any(p.__class__.__name__ == "Params4bit" for p in qlora.parameters())


def test_unknown_strategy_suggests():
    from peft_arena.errors import UserError

    with pytest.raises(UserError, match="Did you mean 'lora'"):
        load_strategies().get("lroa")
