"""Confidence intervals for the headline metrics, from a bootstrap over near-duplicate groups.

Copies of one scan are not independent evidence: a model that misses one slice saved four times
loses four test images at once. Resampling whole groups (a cluster bootstrap) gives intervals
as wide as the evidence really is; resampling images would make them too narrow. Groups are
drawn within their class, so every resample keeps the split's class balance.
"""
from __future__ import annotations

import numpy as np

from tumord.training.metrics import evaluate, roc_auc

HEADLINE = ("accuracy", "sensitivity", "specificity", "auc")


def _group_resamples(labels: np.ndarray, groups: np.ndarray, resamples: int, seed: int):
    """(number of groups, iterator of index arrays): whole groups drawn with replacement within their class."""
    members: dict[int, list[np.ndarray]] = {}  # class -> index arrays of its groups
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        members.setdefault(int(np.bincount(labels[idx]).argmax()), []).append(idx)
    rng = np.random.default_rng(seed)
    draws = (np.concatenate([np.concatenate([of_class[i] for i in rng.integers(len(of_class), size=len(of_class))])
                             for of_class in members.values()]) for _ in range(resamples))
    return int(sum(len(v) for v in members.values())), draws


def group_bootstrap(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, class_names: list[str],
                    negative_class: str | None, resamples: int = 1000, level: float = 0.95,
                    seed: int = 0) -> dict:
    """Percentile intervals of accuracy, sensitivity, specificity and ROC AUC."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    n_groups, draws = _group_resamples(labels, groups, resamples, seed)
    values = {k: [] for k in HEADLINE}
    for drawn in draws:
        m = evaluate(probs[drawn], labels[drawn], class_names, negative_class)
        for k in HEADLINE:
            values[k].append(m[k])
    tail = (1 - level) / 2 * 100
    return {
        "level": level, "resamples": resamples, "groups": n_groups,
        **{k: [float(v) for v in np.nanpercentile(values[k], [tail, 100 - tail])] for k in HEADLINE},
    }


def paired_auc_difference(score_a: np.ndarray, score_b: np.ndarray, positive: np.ndarray, groups: np.ndarray,
                          resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """AUC(b) - AUC(a) of two models' scores on the same scans, with a percentile interval from
    resampling groups for both at once (paired: what both get wrong cancels out of the spread)."""
    positive, groups = np.asarray(positive).astype(bool), np.asarray(groups)
    n_groups, draws = _group_resamples(positive.astype(np.int64), groups, resamples, seed)
    diffs = np.array([roc_auc(score_b[d], positive[d]) - roc_auc(score_a[d], positive[d]) for d in draws])
    tail = (1 - level) / 2 * 100
    return {"difference": roc_auc(score_b, positive) - roc_auc(score_a, positive),
            "interval": [float(v) for v in np.nanpercentile(diffs, [tail, 100 - tail])],
            "share_b_better": float(np.mean(diffs > 0)), "level": level, "resamples": resamples, "groups": n_groups}
