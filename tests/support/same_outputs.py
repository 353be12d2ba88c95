"""One check for the pruned models (first-token and last-token): the same logits and the same
gradients as the unpruned twin, on one batch."""

from __future__ import annotations

import torch


def assert_same_logits_and_gradients(model: torch.nn.Module, pruned: torch.nn.Module,
                                     batch: dict[str, torch.Tensor]) -> None:
    """`model` and `pruned` in eval mode (no dropout anywhere; gradients still flow)."""
    expected, got = model(**batch), pruned(**batch)
    assert torch.allclose(expected.logits, got.logits, atol=1e-5)
    expected.loss.backward()
    got.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    pruned_grads = {n: p.grad for n, p in pruned.named_parameters() if p.grad is not None}
    assert grads.keys() == pruned_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, pruned_grads[name], atol=1e-5), name
