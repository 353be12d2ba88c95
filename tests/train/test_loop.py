"""The training and evaluation loops (cell.loop) on a two-feature toy classifier through a CPU
Accelerator: steps, validation passes, fractional epochs, counts, divergence and metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from peft_arena.config.spec import CellSpec
from peft_arena.train.loop import (
    NonFiniteLoss,
    TrainResult,
    evaluate,
    optimizer_steps_per_epoch,
    train_epochs,
)


class Toy(torch.nn.Module):
    """A linear classifier that takes a model's keyword arguments and answers like one."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, input_ids, attention_mask, labels=None):
        logits = self.linear(input_ids.float())
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(loss=loss, logits=logits)


class Counting:
    """A strategy's hook: records the optimizer step it is called at."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, model, step: int) -> None:
        self.steps.append(step)


def _examples(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Separable: the label is which of the two features is the larger. Two positions each,
    the second one padding in every other example (the token counts must skip it)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 2)).astype(np.float32)
    return [{"input_ids": torch.from_numpy(features[i]),
             "attention_mask": torch.tensor([1, i % 2]),
             "labels": torch.tensor(int(features[i, 1] > features[i, 0]))} for i in range(n)]


def _loader(examples, batch_size: int) -> DataLoader:
    return DataLoader(examples, batch_size=batch_size, shuffle=False)


def _train(spec: CellSpec, train: list, val: list, batch_size: int = 8, **kwargs):
    accelerator = Accelerator(cpu=True)
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, loader, val_loader = accelerator.prepare(
        model, optimizer, _loader(train, batch_size), _loader(val, 16))
    per_epoch = optimizer_steps_per_epoch(len(loader), 1)
    total = kwargs.pop("total_steps", round(spec.epochs * per_epoch))
    strategy = Counting()
    result = train_epochs(model, strategy, optimizer, scheduler, loader, val_loader, accelerator,
                          spec, total, **kwargs)
    return result, strategy, model


def _spec(**settings) -> CellSpec:
    return CellSpec(model="toy", task="toy", strategy="full",
                    **{"learning_rate": 0.5, "epochs": 3, **settings})


def test_each_epoch_steps_validates_once_and_the_loss_falls() -> None:
    train, val = _examples(40), _examples(32, seed=1)
    result, strategy, _ = _train(_spec(), train, val)
    # 40 examples in batches of 8: 5 optimizer steps an epoch.
    assert [(e["epoch"], e["step"]) for e in result.history] == [(1, 5), (2, 10), (3, 15)]
    assert strategy.steps == list(range(1, 16))  # the hook sees every optimizer step
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_accuracy"] >= 0.8  # a separable task, learnt (chance: 0.5)
    assert result.samples == 3 * 40
    assert result.tokens == 3 * sum(int(e["attention_mask"].sum()) for e in train)
    assert (result.best_step, result.stopped_early) == (None, False)
    assert result.final is result.history[-1]


def test_a_fractional_epoch_stops_mid_way_and_validates_the_weights_it_ends_with() -> None:
    result, strategy, _ = _train(_spec(epochs=1.4), _examples(40), _examples(16, seed=1))
    assert strategy.steps[-1] == 7  # 1.4 x 5 steps
    assert [(e["epoch"], e["step"]) for e in result.history] == [(1, 5), (2, 7)]
    assert result.samples == 7 * 8


def test_eval_every_n_steps_validates_at_those_steps_and_at_the_end() -> None:
    result, _, _ = _train(_spec(epochs=1, eval_every="2"), _examples(40), _examples(16, seed=1))
    # Steps 2 and 4, then the final weights (step 5) get their own pass.
    assert [(e["epoch"], e["step"]) for e in result.history] == [(0.4, 2), (0.8, 4), (1.0, 5)]


def test_each_entry_reaches_on_evaluate_and_it_may_abandon_the_run() -> None:
    seen: list[dict] = []

    def hopeless(entry: dict) -> None:
        seen.append(entry)
        if len(seen) == 2:
            raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        _train(_spec(), _examples(40), _examples(16, seed=1), on_evaluate=hopeless)
    assert [e["step"] for e in seen] == [5, 10]


def test_a_non_finite_loss_stops_training_in_one_line() -> None:
    train = _examples(40)
    train[0]["input_ids"] = torch.tensor([float("inf"), 0.0])  # the first batch's loss: NaN
    with pytest.raises(NonFiniteLoss, match=r"^loss became nan at step 0; lower the learning"):
        _train(_spec(), train, _examples(16, seed=1))


def test_an_epochs_last_short_group_still_steps_the_optimizer() -> None:
    assert optimizer_steps_per_epoch(10, 1) == 10
    assert optimizer_steps_per_epoch(10, 4) == 3
    assert optimizer_steps_per_epoch(8, 4) == 2
    assert optimizer_steps_per_epoch(1, 8) == 1


def test_evaluate_scores_the_predictions_it_returns() -> None:
    accelerator = Accelerator(cpu=True)
    model = Toy()
    with torch.no_grad():  # predicts label 1 exactly when the second feature is larger
        model.linear.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        model.linear.bias.zero_()
    examples = _examples(30, seed=2)
    for example in examples[:6]:
        example["labels"] = 1 - example["labels"]  # six wrong answers
    model.train()
    result = evaluate(model, _loader(examples, 7), accelerator, "test")
    assert not model.training
    assert result.samples == 30 and len(result.y_true) == len(result.y_pred) == 30
    assert result.y_true.tolist() == [int(e["labels"]) for e in examples]  # loader order
    assert result.accuracy == pytest.approx(24 / 30)
    assert result.accuracy == pytest.approx(float(np.mean(result.y_true == result.y_pred)))
    assert result.tokens == sum(int(e["attention_mask"].sum()) for e in examples)
    logits = torch.stack([model.linear(e["input_ids"]) for e in examples]).detach()
    expected = torch.nn.functional.cross_entropy(logits, torch.stack([e["labels"]
                                                                      for e in examples]))
    assert result.loss == pytest.approx(float(expected), rel=1e-5)
    assert 0 < result.confidence["mean"] <= 1


def test_the_final_pass_is_the_one_whose_weights_the_model_holds() -> None:
    history = [{"step": 5, "val_loss": 0.5}, {"step": 10, "val_loss": 0.4},
               {"step": 15, "val_loss": 0.6}]
    assert TrainResult(history=history).final == history[-1]
    assert TrainResult(history=history, best_step=10).final == history[1]
    assert TrainResult(history=[]).final is None
