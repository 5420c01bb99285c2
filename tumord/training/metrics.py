"""Evaluation metrics: accuracy, sensitivity, specificity, ROC AUC, confusion, calibration error."""
from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every threshold (ties handled as one step)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order].astype(np.float64)
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps, fps = np.cumsum(y)[distinct], np.cumsum(1 - y)[distinct]
    p, n = max(y.sum(), 1), max(len(y) - y.sum(), 1)
    return np.r_[0, fps / n], np.r_[0, tps / p]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    if positive.all() or not positive.any():
        return float("nan")
    fpr, tpr = roc_curve(scores, positive)
    return float(np.trapezoid(tpr, fpr))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = pred == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def evaluate(probs: np.ndarray, labels: np.ndarray, class_names: list[str], negative_class: str | None) -> dict:
    """All metrics for one set of predictions.

    Sensitivity and specificity treat `negative_class` (e.g. 'normal') as negative and every
    other class as positive (a tumor of some kind); ROC AUC scores 1 - P(negative). Without a
    negative class among the names, they are macro-averaged one-vs-rest.
    """
    labels = np.asarray(labels)
    k = len(class_names)
    pred = probs.argmax(axis=1)
    confusion = np.zeros((k, k), int)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for c, name in enumerate(class_names):
        tp = confusion[c, c]
        per_class[name] = {
            "precision": float(tp / max(confusion[:, c].sum(), 1)),
            "recall": float(tp / max(confusion[c].sum(), 1)),
            "support": int(confusion[c].sum()),
        }
    if negative_class in class_names:
        neg = class_names.index(negative_class)
        pos_true, pos_pred = labels != neg, pred != neg
        sens = float((pos_true & pos_pred).sum() / max(pos_true.sum(), 1))
        spec = float((~pos_true & ~pos_pred).sum() / max((~pos_true).sum(), 1))
        auc = roc_auc(1 - probs[:, neg], pos_true)
    else:
        sens = float(np.mean([v["recall"] for v in per_class.values()]))
        spec = float(np.mean([(confusion.sum() - confusion[c].sum() - confusion[:, c].sum() + confusion[c, c])
                              / max(confusion.sum() - confusion[c].sum(), 1) for c in range(k)]))
        auc = float(np.nanmean([roc_auc(probs[:, c], labels == c) for c in range(k)]))
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": (sens + spec) / 2,  # what a site whose labels run 9 to 1 needs to see
        "auc": auc,
        "ece": expected_calibration_error(probs, labels),
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
    }
