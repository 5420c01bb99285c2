"""A data audit: labels that look wrong, and scans that do not look like brain MR.

Label errors by confident learning (Northcutt et al. 2021) on out-of-fold predictions: a
logistic regression on the model's pooled CNN features, trained in k group-aware folds, predicts
every scan without having seen it or its near-duplicates. Per class j the threshold t_j is the
mean predicted probability of j among scans labelled j; a scan labelled i whose probability of
some other class j reaches t_j (the largest such j) is a likely label error, ranked by how little
probability its own label gets. The features come from a network that may have trained on some
of these scans, and it may have learned a wrong label too: the audit finds fewer errors there.

Not brain MR, from simple image statistics: colour (channels that differ; MR is grayscale), and
CT-like (much of the head at full brightness: the saturated skull of a CT in a brain window). And, from the features, scans unusually far from all others (robust z of the distance
to the nearest neighbours outside their near-duplicate group).
"""
from __future__ import annotations

import cv2
import numpy as np

from tumord.data.intensity import head_mask


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-2, steps: int = 300) -> np.ndarray:
    """Multinomial logistic regression by gradient descent on standardized features; (d+1, classes)."""
    xb = np.c_[x, np.ones(len(x))]
    w = np.zeros((xb.shape[1], classes))
    onehot = np.eye(classes)[y]
    lr = 1.0
    for _ in range(steps):
        z = xb @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= lr * (xb.T @ (p - onehot) / len(x) + l2 * np.r_[w[:-1], np.zeros((1, classes))])
    return w


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, classes: int,
                      folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each scan's class probabilities from a model fit on the folds without its group."""
    ids = np.unique(groups)
    fold_of = dict(zip(ids, np.random.default_rng(seed).permutation(len(ids)) % folds))
    fold = np.array([fold_of[g] for g in groups])
    probs = np.zeros((len(labels), classes))
    for f in range(folds):
        tr, te = fold != f, fold == f
        mean, std = features[tr].mean(0), features[tr].std(0) + 1e-6
        w = fit_logistic((features[tr] - mean) / std, labels[tr], classes)
        z = np.c_[(features[te] - mean) / std, np.ones(te.sum())] @ w
        p = np.exp(z - z.max(1, keepdims=True))
        probs[te] = p / p.sum(1, keepdims=True)
    return probs


def confident_label_issues(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per scan the class confident learning suggests instead of its label, or -1 (no issue)."""
    k = probs.shape[1]
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(k)])
    confident = probs >= thresholds
    confident[np.arange(len(labels)), labels] = False
    masked = np.where(confident, probs, -1.0)
    return np.where(confident.any(1), masked.argmax(1), -1)


def outlier_z(features: np.ndarray, groups: np.ndarray, neighbours: int = 5, block: int = 1024) -> np.ndarray:
    """Robust z-score of the mean cosine distance to the nearest scans outside the own group."""
    f = (features - features.mean(0)) / (features.std(0) + 1e-6)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-9
    dist = np.empty(len(f))
    for s in range(0, len(f), block):
        d = 1 - f[s : s + block] @ f.T
        d[groups[s : s + block, None] == groups[None, :]] = np.inf
        dist[s : s + block] = np.sort(d, axis=1)[:, :neighbours].mean(1)
    med = np.median(dist)
    return (dist - med) / (1.4826 * np.median(np.abs(dist - med)) + 1e-9)


def scan_statistics(path) -> tuple[float, float]:
    """(colour, ct_score) of a scan file, read at half resolution.

    colour: mean absolute difference between the colour channels (0 for grayscale; MR is gray).
    ct_score: the share of the head at full brightness (>= 245), times the cube of the share of those
    pixels on the head's rim. A CT in a brain window shows the skull saturated, a thick white ring;
    saturated MR is mostly inside (a bright tumor or edema). A frame of 3% of the image is
    cleared first, so white borders and burnt-in frames do not count.
    """
    img = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2)
    if img is None:
        return 0.0, 0.0
    wide = img.astype(np.int16)
    colour = float(np.abs(wide[..., 0] - wide[..., 1]).mean() + np.abs(wide[..., 1] - wide[..., 2]).mean()) / 2
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    bh, bw = max(1, h * 3 // 100), max(1, w * 3 // 100)
    gray[:bh], gray[-bh:], gray[:, :bw], gray[:, -bw:] = 0, 0, 0, 0
    mask = head_mask(gray)
    if mask is None:
        return colour, 0.0
    saturated = mask & (gray >= 245)
    band = max(3, int(np.sqrt(mask.sum()) * 0.12))  # the skull: the outer 12% of the head's width
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * band + 1,) * 2, np.uint8)).astype(bool)
    on_rim = (saturated & ~inner).sum() / max(1, saturated.sum())
    return colour, float(saturated.sum() / mask.sum() * on_rim**3)  # cubed: saturated MR tissue reaches the rim
