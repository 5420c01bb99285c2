"""Numerically stable softmax and cross-entropy (log-sum-exp), with optional label smoothing."""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the batch and its gradient w.r.t. the logits."""
    n, k = logits.shape
    target = np.full((n, k), label_smoothing / k, dtype=logits.dtype)
    target[np.arange(n), labels] += 1.0 - label_smoothing
    logp = log_softmax(logits)
    loss = float(-(target * logp).sum() / n)
    grad = (np.exp(logp) - target) / n  # d/dlogits of the mean loss
    return loss, grad.astype(logits.dtype, copy=False)
