"""Classification metrics, computed locally (no metric downloads)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Macro F1 weighs every class equally, so a model that ignores rare intents shows it.
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray,
                 label_names: list[str]) -> dict[str, float]:
    """F1 of every class that has examples in y_true, by name; a class the split lacks has
    no F1 (rather than a 0 that would read as "always wrong")."""
    present = np.unique(y_true)
    scores = f1_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    return {label_names[i]: float(score) for i, score in zip(present, scores, strict=True)}


CALIBRATION_BINS = 10


def confidence_summary(confidence: np.ndarray, correct: np.ndarray,
                       bins: int = CALIBRATION_BINS) -> dict[str, float]:
    """How sure the model is (its top softmax probability) and how well that matches reality.

    ECE (expected calibration error) splits examples into equal-width confidence bins and
    averages |accuracy - mean confidence| over the bins, weighted by their share of examples:
    0 means "80% sure" is right 80% of the time.
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if confidence.size == 0:
        return {"mean": float("nan"), "share_above_0_9": float("nan"), "ece": float("nan")}
    # Bin i holds (i/bins, (i+1)/bins]; a confidence of exactly 0 joins the first bin.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += members.mean() * gap
    return {"mean": float(confidence.mean()),
            "share_above_0_9": float((confidence > 0.9).mean()), "ece": float(ece)}
