"""Every registered strategy builds, trains and evaluates on tiny random BERT and RoBERTa
models; methods.yaml entries are checked when they load; plug-ins still register."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from peft_arena import api
from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.matrix.budget import count_cell_parameters
from peft_arena.measure.params import count_parameters
from peft_arena.model.loading import load_model, load_tokenizer
from peft_arena.strategies import Strategy, load_strategies
from peft_arena.strategies import builtin as registry
from peft_arena.strategies.base import Choice
from peft_arena.strategies.methods import build_strategy, register_methods
from tests.support.paths import COMMITTED_RECORDS, REPO
from tests.support.synthetic import KEYWORDS, synthetic_rows

REGISTERED = load_strategies().names()
# The methods the presets run train for several steps here; every other strategy takes one
# step on tiny BERT and Llama in tests/strategies/test_every_method.py.
PRESET_METHODS = ["full", "lora", "qlora", "ia3", "adalora", "loha", "lokr", "vera", "oft",
                  "fourierft", "prompt_tuning", "ln_tuning"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Ops on the tiny models take microseconds; a second thread only adds synchronisation,
    which on a loaded 2-core machine made training ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(model_dir, n=24):
    tokenizer = load_tokenizer(str(model_dir))
    rows = synthetic_rows(n, seed=3)
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([r["label"] for r in rows])
    return dict(batch)


def _wrapped(model_dir, strategy_name, total_steps, **settings):
    strategy = load_strategies().get(strategy_name)(
        CellSpec(model=str(model_dir), task="synth", strategy=strategy_name, **settings))
    torch.manual_seed(0)
    model = load_model(str(model_dir), KEYWORDS, on_gpu=False,
                       **strategy.load_kwargs(torch.float32))
    return strategy, strategy.wrap(model, total_steps)


def _eval_loss(model, batch):
    model.eval()  # compare losses without dropout noise
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (len(batch["labels"]), len(KEYWORDS))
    assert torch.isfinite(logits).all()
    return torch.nn.functional.cross_entropy(logits, batch["labels"]).item()


def _train(model_dir, strategy_name, steps=30):
    """Returns the trained model, its parameters before training, and the loss before/after."""
    # Tiny random models need larger steps than the real defaults to move within a few steps.
    lr = 1e-2
    strategy, model = _wrapped(model_dir, strategy_name, steps, learning_rate=lr)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    # No weight decay: a parameter that changes then got a gradient, not only decay.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=0.0)
    batch = _batch(model_dir)
    before = _eval_loss(model, batch)
    model.train()
    for step in range(1, steps + 1):
        loss = model(**batch).loss
        assert torch.isfinite(loss), f"{strategy_name}: loss {loss.item()} at step {step}"
        loss.backward()
        optimizer.step()
        strategy.on_step_end(model, step)
        optimizer.zero_grad()
    return model, initial, before, _eval_loss(model, batch)


@pytest.mark.parametrize("strategy", PRESET_METHODS)
@pytest.mark.parametrize("arch", ["tiny_bert", "tiny_roberta"])
def test_every_strategy_trains_and_evaluates(strategy, arch, request):
    model, initial, before, after = _train(request.getfixturevalue(arch), strategy)
    assert after < before * 0.9, f"{strategy} on {arch}: loss {before:.4f} -> {after:.4f}"
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    if strategy != "full":
        assert trainable < total / 2
    for name, param in model.named_parameters():
        moved = not torch.equal(param.detach(), initial[name])
        assert moved == param.requires_grad, (
            f"{strategy} on {arch}: {'frozen' if moved else 'trainable'} {name} "
            f"{'changed' if moved else 'never changed'}")


@pytest.mark.parametrize("strategy", PRESET_METHODS)
def test_dry_run_counts_match_the_trained_model(strategy, tiny_bert):
    """The dry run counts on the meta device; the cell counts the real model."""
    _, model = _wrapped(tiny_bert, strategy, total_steps=100)
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy=strategy)
    counted = count_cell_parameters(spec, num_labels=len(KEYWORDS))
    assert (counted.trainable, counted.total) == count_parameters(model)


@pytest.mark.parametrize("strategy", REGISTERED)
def test_every_value_a_search_can_choose_builds_the_default_model(strategy):
    """Counted on the meta device in MiniLM's shape: search spaces are sized for real models."""
    cls = load_strategies().get(strategy)
    choices = {k: d.options for k, d in cls.search.items() if isinstance(d, Choice)}
    for key, options in choices.items():
        for value in options:
            spec = CellSpec(model="minilm", task="agnews", strategy=strategy,
                            peft={**cls.peft_defaults, key: value})
            assert count_cell_parameters(spec, num_labels=4).trainable > 0, (key, value)


# The tiny models: hidden 32, 2 layers, 3 labels. BERT's head is one 32 -> 3 linear layer.
HIDDEN, LAYERS, HEAD = 32, 2, 32 * 3 + 3


@pytest.mark.parametrize("strategy, adapter", [
    # q and v in each layer: a scaling vector over the rank (256) and one over the outputs.
    ("vera", 2 * LAYERS * (256 + HIDDEN)),
    # One 32-wide block per q and v weight; a rotation of it is a skew-symmetric matrix,
    # stored as its 32 * 31 / 2 entries above the diagonal.
    ("oft", 2 * LAYERS * (32 * 31 // 2)),
    ("prompt_tuning", 20 * HIDDEN),  # 20 virtual token embeddings
    # Weight and bias of each LayerNorm: the embeddings' and two per layer.
    ("ln_tuning", (1 + 2 * LAYERS) * 2 * HIDDEN),
    ("fourierft", 2 * LAYERS * 1000),  # 1,000 spectral coefficients per q and v weight
])
def test_trainable_counts_match_hand_arithmetic(strategy, adapter, tiny_bert):
    _, model = _wrapped(tiny_bert, strategy, total_steps=10)
    assert count_parameters(model)[0] == adapter + HEAD


def test_adalora_reallocates_ranks(tiny_bert):
    """Without update_and_allocate every step AdaLoRA silently stays plain LoRA at init_r."""
    model, _, _, _ = _train(tiny_bert, "adalora", steps=30)
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
    model, _, _, _ = _train(tiny_bert, "lora", steps=1)
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy="lora")
    assert load_strategies().get("lora")(spec).final_state(model) is None


def test_qlora_is_lora_on_a_four_bit_base(tiny_bert):
    registered = load_strategies()
    lora, qlora = registered.get("lora"), registered.get("qlora")
    assert issubclass(qlora, lora)  # its settings come from the lora entry, not a copy
    assert (qlora.peft_defaults, qlora.train_defaults, qlora.search) == \
        (lora.peft_defaults, lora.train_defaults, lora.search)
    _, lora_model = _wrapped(tiny_bert, "lora", total_steps=1)
    _, qlora_model = _wrapped(tiny_bert, "qlora", total_steps=1)
    assert count_parameters(qlora_model) == count_parameters(lora_model)
    assert any(p.__class__.__name__ == "Params4bit" for p in qlora_model.parameters())


def test_names_come_from_the_registry():
    for name in REGISTERED:
        strategy = load_strategies().get(name)
        assert strategy.name == name
        assert strategy.summary and "\n" not in strategy.summary
        assert strategy.train_defaults["learning_rate"] > 0
    # At least the methods that are config only: no Python module of their own.
    folder = Path(registry.__file__).parent
    config_only = [n for n in REGISTERED if not (folder / f"{n}.py").exists()]
    assert len(config_only) >= 10, config_only


def test_unknown_strategy_suggests():
    with pytest.raises(UserError, match="Did you mean 'lora'"):
        load_strategies().get("lorra")


@pytest.mark.skipif(not COMMITTED_RECORDS.is_dir(), reason="no committed results/records")
def test_committed_records_keep_their_identity():
    """Defaults that move would change the config hash, and `run` would redo every cell."""
    records = sorted(COMMITTED_RECORDS.glob("*.json"))
    assert records
    for path in records:
        spec = json.loads(path.read_text())["spec"]
        [cell] = api.plan_cells(tasks=[spec["task"]], strategies=[spec["strategy"]],
                                seeds=[spec["seed"]], preset="quick")
        assert f"{cell.cell_id}.json" == path.name


# ---------------------------------------------------------------- methods YAML


@pytest.mark.parametrize("entry, message", [
    ({"summary": "x", "learning_rate": 1e-3, "peft_type": "LORA", "rank": 8},
     "unknown key 'rank'"),
    ({"summary": "x", "learning_rate": 1e-3, "peft_type": "LORA", "peft": {"rank": 8}},
     "'rank' is not a field of LoraConfig"),
    ({"summary": "x", "learning_rate": 1e-3, "peft_type": "LORRA"},
     "peft_type 'LORRA' is not a PEFT method"),
    ({"summary": "x", "peft_type": "LORA"}, "learning_rate is required"),
    ({"summary": "x", "learning_rate": "fast"}, "learning_rate='fast' must be a number"),
    ({"summary": "x", "learning_rate": -1.0}, "learning_rate must be > 0"),
    ({"summary": "x", "learning_rate": 1e-3, "train": {"epoch": 2}},
     "train setting 'epoch' is unknown"),
    ({"learning_rate": 1e-3}, "summary must be one line"),
    ({"summary": "x", "learning_rate": 1e-3, "peft": {"r": 8}}, "peft settings need a peft_type"),
    ({"summary": "x", "learning_rate": 1e-3, "peft_type": "LORA", "search": {"r": 8}},
     "search.r must be a list"),
    ({"summary": "x", "learning_rate": 1e-3, "peft_type": "LORA", "search": {"rank": [8]}},
     "search names 'rank'"),
    ({"summary": "x", "extends": "lorra"}, "Did you mean 'lora'"),
    ({"summary": "x", "learning_rate": 1e-3, "hooks": "peft_arena.nowhere:Hooks"},
     "cannot be loaded"),
    ({"summary": "x", "learning_rate": 1e-3, "hooks": "peft_arena.common.errors:UserError"},
     "not a Strategy subclass"),
])
def test_a_bad_entry_names_its_file_and_problem(entry, message):
    load_strategies()  # `extends` resolves against registered strategies
    with pytest.raises(UserError, match=message) as caught:
        build_strategy("mine", entry, "my_methods.yaml")
    assert "Strategy 'mine' in my_methods.yaml" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_yaml_fails_in_one_line(tmp_path):
    path = tmp_path / "methods.yaml"
    path.write_text("lora: {summary: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        register_methods(path)


def test_yaml_learning_rate_written_1e_3_is_a_number():
    cls = build_strategy("mine", {"summary": "x", "learning_rate": "1e-3"}, "m.yaml")
    assert cls.train_defaults == {"learning_rate": 1e-3}


def test_the_readme_example_entry_trains(tiny_bert, monkeypatch):
    page = (REPO / "docs" / "strategies.md").read_text()
    example = re.search(r"## Adding a method\n.*?```yaml\n(.*?)```", page, re.S).group(1)
    [(name, entry)] = yaml.safe_load(example).items()
    monkeypatch.setattr(registry.strategies, "_items", dict(registry.strategies._items))
    registry.strategies.add(name, build_strategy(name, entry, "docs/strategies.md"))
    model, _, before, after = _train(tiny_bert, name)
    assert after < before * 0.9
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy=name)
    assert count_cell_parameters(spec, num_labels=len(KEYWORDS)).trainable == \
        count_parameters(model)[0]


# ---------------------------------------------------------------- plug-ins


PLUGIN = '''
from pathlib import Path

from peft_arena.strategies import Strategy, strategies
from peft_arena.strategies.methods import register_methods


@strategies.register("frozen_body")
class FrozenBody(Strategy):
    summary = "only the head trains"
    train_defaults = {"learning_rate": 1e-3}

    def wrap(self, model, total_steps):
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("classifier")
        return model


register_methods(Path(__file__).with_name("more_methods.yaml"))
'''


def test_entry_point_plugins_register_classes_and_yaml(tmp_path, monkeypatch, tiny_bert):
    from importlib.metadata import EntryPoint

    (tmp_path / "arena_plugin.py").write_text(PLUGIN)
    (tmp_path / "more_methods.yaml").write_text(
        "lora16:\n  summary: LoRA at rank 16\n  extends: lora\n  peft: {r: 16}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = EntryPoint(name="arena", value="arena_plugin", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [plugin] if group == registry.ENTRY_POINT_GROUP else [])
    # A fresh registry, restored afterwards, so the plug-in loads as in a new process.
    monkeypatch.setattr(registry.strategies, "_items", {})
    monkeypatch.setattr(registry, "_loaded", False)

    names = load_strategies().names()
    assert {"frozen_body", "lora16"} | set(REGISTERED) == set(names)
    assert load_strategies().get("frozen_body").name == "frozen_body"
    [cell] = api.plan_cells(tasks=["agnews"], strategies=["lora16"], model=str(tiny_bert),
                            seeds=[0], sets=["lora16.lora_dropout=0.0"])
    lora = load_strategies().get("lora")
    assert cell.peft == {**lora.peft_defaults, "r": 16, "lora_dropout": 0.0}
    assert cell.learning_rate == lora.train_defaults["learning_rate"]
    infos = {info["name"]: info for info in api.strategy_infos()}
    assert infos["frozen_body"]["summary"] == "only the head trains"
    _, model = _wrapped(tiny_bert, "frozen_body", total_steps=1)
    assert count_parameters(model)[0] == HEAD
    assert issubclass(load_strategies().get("lora16"), Strategy)
