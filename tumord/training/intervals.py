"""Confidence intervals for the headline metrics, from a bootstrap over near-duplicate groups.

Copies of one scan are not independent evidence: a model that misses one slice saved four times
loses four test images at once. Resampling whole groups (a cluster bootstrap) gives intervals
as wide as the evidence really is; resampling images would make them too narrow. Groups are
drawn within their class, so every resample keeps the split's class balance.
"""
from __future__ import annotations

import numpy as np

from tumord.training.metrics import evaluate

HEADLINE = ("accuracy", "sensitivity", "specificity", "auc")


def group_bootstrap(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, class_names: list[str],
                    negative_class: str | None, resamples: int = 1000, level: float = 0.95,
                    seed: int = 0) -> dict:
    """Percentile intervals of accuracy, sensitivity, specificity and ROC AUC."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    members: dict[int, list[np.ndarray]] = {}  # class -> index arrays of its groups
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        members.setdefault(int(np.bincount(labels[idx]).argmax()), []).append(idx)
    rng = np.random.default_rng(seed)
    values = {k: [] for k in HEADLINE}
    for _ in range(resamples):
        drawn = np.concatenate([np.concatenate([of_class[i] for i in rng.integers(len(of_class), size=len(of_class))])
                                for of_class in members.values()])
        m = evaluate(probs[drawn], labels[drawn], class_names, negative_class)
        for k in HEADLINE:
            values[k].append(m[k])
    tail = (1 - level) / 2 * 100
    return {
        "level": level, "resamples": resamples, "groups": int(sum(len(v) for v in members.values())),
        **{k: [float(v) for v in np.nanpercentile(values[k], [tail, 100 - tail])] for k in HEADLINE},
    }
