"""Temperature scaling: one scalar T fitted on validation logits so that confidences mean something."""
from __future__ import annotations

import numpy as np

from tumord.nn.losses import log_softmax


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    logp = log_softmax(logits.astype(np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """Minimizes validation NLL over log T by golden-section search (NLL is unimodal in log T)."""
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(60):
        if nll(logits, labels, np.exp(c)) < nll(logits, labels, np.exp(d)):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    return float(np.exp((a + b) / 2))
