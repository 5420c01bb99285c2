"""Reference statistics of the training data's pooled features, and the distance of a scan to them.

Two distances, both larger for scans less like the training data:
- knn: the distance of the L2-normalized feature vector to its k-th nearest neighbour among the
  training scans' normalized features (Sun et al., ICML 2022);
- mahalanobis: the smallest Mahalanobis distance to a class mean under one covariance shared by
  the classes (Lee et al., NeurIPS 2018).
The validation scans' scores are kept sorted, so a threshold that lets a chosen share of
in-source scans through is read off them at load time (`threshold`).

A third score, combined, puts the two on one scale before adding them: each distance becomes
its surprise, -ln of the share of validation scans that score at least as far (`surprise`), and
the combined score is the mean of the two surprises (-ln of the geometric mean of the two shares,
as in Fisher's product of p-values). Scoring needs no pairs of validation scores, only the sorted
lists; the threshold is read off the validation scans' own combined scores (`val_combined`). A
file made before `combined` existed lacks them and gets -ln(1 - accept_share), where each distance
alone would stand at its own threshold: that lets more than accept_share through (the two
distances do not always agree), 98% instead of 95% on the shipped model's validation scans.

In the model file these are plain float arrays named `abstain.<name>` beside the weights, covered
by their own SHA-256 in the metadata (`meta["abstain"]["sha256"]`), read with allow_pickle=False.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREFIX = "abstain."
METHODS = ("knn", "mahalanobis")  # the distances, each with its sorted validation scores in the file
COMBINED = "combined"
CHOICES = METHODS + (COMBINED,)
TAIL = 0.9  # above this share of the validation scores, the share farther is an exponential fit
MAX_BANK = 8192  # training features kept for k-NN; more adds file size and scoring time, not accuracy
SHRINKAGE = 0.01  # covariance blended with its mean variance: pooled ReLU features have near-empty directions


@dataclass
class Reference:
    bank: np.ndarray  # (N, D) float16, unit-length training features
    means: np.ndarray  # (C, D) float32 class means
    precision: np.ndarray  # (D, D) float32 inverse of the shared covariance
    val_scores: dict[str, np.ndarray]  # method -> sorted validation scores (combined: absent in older files)
    k: int

    # --- scoring -----------------------------------------------------------------------------
    def score(self, features: np.ndarray, method: str = "knn") -> np.ndarray:
        """(N, D) pooled features -> (N,) distances; larger is farther from the training data."""
        f = np.asarray(features, np.float32)
        if method == "knn":
            return knn_distance(normalize(f), self.bank, self.k)
        if method == "mahalanobis":
            return mahalanobis_distance(f, self.means, self.precision)
        if method == COMBINED:
            return self.combine({m: self.score(f, m) for m in METHODS})
        raise ValueError(f"unknown scoring method {method!r}; expected one of {', '.join(CHOICES)}")

    def combine(self, distances: dict[str, np.ndarray]) -> np.ndarray:
        """The combined score of scans from each method's distances of them: the mean surprise."""
        return np.mean([surprise(self.val_scores[m], distances[m]) for m in METHODS], axis=0)

    def threshold(self, accept_share: float, method: str = "knn") -> float:
        """The distance below which `accept_share` of the validation scans fall."""
        if not 0 < accept_share <= 1:
            raise ValueError(f"accept share {accept_share!r} must be in (0, 1]")
        if method == COMBINED and COMBINED not in self.val_scores:  # an older file: no combined scores kept
            return float(-np.log(max(1 - accept_share, 1e-12)))
        return float(np.quantile(self.val_scores[method], accept_share))

    # --- the model file ------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"{PREFIX}bank": self.bank, f"{PREFIX}means": self.means, f"{PREFIX}precision": self.precision}
        arrays.update({f"{PREFIX}val_{m}": s for m, s in self.val_scores.items()})
        return arrays

    def describe(self) -> dict:
        """What the metadata records beside the hash."""
        return {"k": self.k, "bank": int(len(self.bank)), "features": int(self.means.shape[1]),
                "validation_scans": int(len(next(iter(self.val_scores.values())))), "methods": list(self.val_scores)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], info: dict) -> "Reference":
        """Raises KeyError/ValueError when arrays are missing or do not fit together."""
        bank, means, precision = (arrays[f"{PREFIX}{n}"] for n in ("bank", "means", "precision"))
        d = means.shape[1]
        if bank.ndim != 2 or bank.shape[1] != d or precision.shape != (d, d):
            raise ValueError(f"shapes do not fit: bank {bank.shape}, means {means.shape}, precision {precision.shape}")
        k = int(info["k"])
        if not 1 <= k <= len(bank):
            raise ValueError(f"k = {k} for a bank of {len(bank)} features")
        val = {m: np.asarray(arrays[f"{PREFIX}val_{m}"], np.float32) for m in CHOICES
               if m in METHODS or f"{PREFIX}val_{m}" in arrays}
        if len({len(v) for v in val.values()}) != 1:
            raise ValueError(f"validation score lists of different lengths: {({m: len(v) for m, v in val.items()})}")
        return cls(bank, means.astype(np.float32), precision.astype(np.float32), val, k)


def surprise(sorted_val: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """-ln of the share of validation scans scoring at least `scores` (sorted_val: their sorted scores).

    Up to the validation scores' TAIL quantile t the share is read off them (mid-ranks, linear in
    between); beyond t it falls exponentially, (1 - TAIL) exp(-(s - t) / b) with b the validation
    scores' mean excess over t (peaks over threshold), so farther scans keep getting more surprising
    past the farthest validation scan instead of all tying at 1/n.
    """
    v = np.asarray(sorted_val, np.float64)
    s = np.asarray(scores, np.float64)
    t = float(np.quantile(v, TAIL))
    excess = v[v > t] - t
    b = max(float(excess.mean()) if len(excess) else 0.0, 1e-6 * (abs(t) + 1e-6))
    below = -np.log(np.maximum(1 - np.interp(s, v, (np.arange(len(v)) + 0.5) / len(v)), 1 - TAIL))
    return np.where(s > t, -np.log(1 - TAIL) + (s - t) / b, below)


def normalize(f: np.ndarray) -> np.ndarray:
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-8)


def knn_distance(unit: np.ndarray, bank: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """Distance of each unit vector to its k-th nearest bank vector (unit vectors: |a-b|^2 = 2-2a.b)."""
    bank = bank.astype(np.float32, copy=False)
    out = np.empty(len(unit), np.float32)
    for s in range(0, len(unit), block):
        sims = unit[s : s + block] @ bank.T
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]  # k-th largest similarity
        out[s : s + block] = np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))
    return out


def mahalanobis_distance(f: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d2 = np.stack([np.einsum("nd,de,ne->n", f - m, precision, f - m) for m in means], axis=1)
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def shrunk_precision(centred: np.ndarray) -> np.ndarray:
    """Inverse of the covariance of centred rows, blended with its mean variance (SHRINKAGE)."""
    cov = centred.T @ centred / max(len(centred) - 1, 1)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.trace(cov) / len(cov) * np.eye(len(cov))
    return np.linalg.inv(cov)


def build(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray, classes: int,
          k: int = 10, seed: int = 0) -> Reference:
    """Statistics from training features, thresholds from validation features (never trained on)."""
    f = np.asarray(train_features, np.float64)
    labels = np.asarray(train_labels)
    means = np.stack([f[labels == c].mean(axis=0) if (labels == c).any() else f.mean(axis=0)
                      for c in range(classes)])
    precision = shrunk_precision(f - means[labels])
    unit = normalize(f.astype(np.float32))
    if len(unit) > MAX_BANK:
        unit = unit[np.sort(np.random.default_rng(seed).choice(len(unit), MAX_BANK, replace=False))]
    ref = Reference(unit.astype(np.float16), means.astype(np.float32), precision.astype(np.float32), {},
                    min(k, len(unit)))
    distances = {m: ref.score(val_features, m) for m in METHODS}  # each computed once
    ref.val_scores = {m: np.sort(distances[m]).astype(np.float32) for m in METHODS}
    ref.val_scores[COMBINED] = np.sort(ref.combine(distances)).astype(np.float32)  # reads the two lists above
    return ref
