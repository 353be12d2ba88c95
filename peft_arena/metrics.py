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
