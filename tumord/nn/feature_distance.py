"""Reference statistics of the training data's features, and the distance of a scan to them.

On the pooled features (the last block's channel means), two distances, both larger for scans
less like the training data:
- knn: the distance of the L2-normalized feature vector to its k-th nearest neighbour among the
  training scans' normalized features (Sun et al., ICML 2022);
- mahalanobis: the smallest Mahalanobis distance to a class mean under one covariance shared by
  the classes (Lee et al., NeurIPS 2018).
The validation scans' scores are kept sorted, so a threshold that lets a chosen share of
in-source scans through is read off them at load time (`threshold`).

A third distance, mahalanobis_previous, is the class Mahalanobis distance of the channel means
of the block before the last one ("previous" in `tumord/model/features.py`): the last block sees
what the classifier needs, the one before it more of how the image looks.

Two scores put distances on one scale before adding them: each distance becomes its surprise,
-ln of the share of validation scans that score at least as far (`surprise`), and the score is
the mean of the surprises (-ln of the geometric mean of the shares, as in Fisher's product of
p-values): combined, of knn and mahalanobis; blocks, of those two and mahalanobis_previous (the
best of about 45 scores from every block's statistics on validation scans of the other source,
docs/abstention.md). Scoring needs no pairs of validation scores, only the sorted lists; the
threshold is read off the validation scans' own scores (`val_combined`, `val_blocks`). A file
made before `combined` existed lacks them and gets -ln(1 - accept_share), where each distance
alone would stand at its own threshold: that lets more than accept_share through (the
distances do not always agree), 98% instead of 95% on the shipped model's validation scans.
A file made before `blocks` existed cannot score it (`available`); the judge falls back to
combined and says so in each verdict's method.

In the model file these are plain float arrays named `abstain.<name>` beside the weights, covered
by their own SHA-256 in the metadata (`meta["abstain"]["sha256"]`), read with allow_pickle=False.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREFIX = "abstain."
METHODS = ("knn", "mahalanobis")  # the last block's distances, each with its sorted validation scores in the file
PREVIOUS = "mahalanobis_previous"  # the block before's; absent in files made before it
COMBINED = "combined"
BLOCKS = "blocks"
SURPRISES = {COMBINED: METHODS, BLOCKS: METHODS + (PREVIOUS,)}  # score -> the distances whose surprises it averages
CHOICES = METHODS + (PREVIOUS, COMBINED, BLOCKS)
TAIL = 0.9  # above this share of the validation scores, the share farther is an exponential fit
MAX_BANK = 8192  # training features kept for k-NN; more adds file size and scoring time, not accuracy
SHRINKAGE = 0.01  # covariance blended with its mean variance: pooled ReLU features have near-empty directions


@dataclass
class Reference:
    bank: np.ndarray  # (N, D) float16, unit-length training features
    means: np.ndarray  # (C, D) float32 class means
    precision: np.ndarray  # (D, D) float32 inverse of the shared covariance
    val_scores: dict[str, np.ndarray]  # method -> sorted validation scores (combined, blocks: absent in older files)
    k: int
    previous_means: np.ndarray | None = None  # (C, E) the block before's; None in older files and one-block networks
    previous_precision: np.ndarray | None = None  # (E, E)

    # --- scoring -----------------------------------------------------------------------------
    def score(self, features: dict[str, np.ndarray] | np.ndarray, method: str = "knn") -> np.ndarray:
        """Features ({"pooled": (N, D), "previous": (N, E)}, or the pooled (N, D) alone) -> (N,)
        scores; larger is farther from the training data."""
        if method not in CHOICES:
            raise ValueError(f"unknown scoring method {method!r}; expected one of {', '.join(CHOICES)}")
        if not self.available(method):
            raise ValueError(f"this reference has no statistics of the block before the last; {method!r} needs them")
        layers = features if isinstance(features, dict) else {"pooled": features}
        if method in SURPRISES:
            return self.combine({m: self.score(layers, m) for m in SURPRISES[method]}, method)
        if method == PREVIOUS:
            return mahalanobis_distance(np.asarray(layers["previous"], np.float32), self.previous_means,
                                        self.previous_precision)
        f = np.asarray(layers["pooled"], np.float32)
        if method == "knn":
            return knn_distance(normalize(f), self.bank, self.k)
        return mahalanobis_distance(f, self.means, self.precision)

    def available(self, method: str) -> bool:
        """Whether this reference can score `method` (files made before `blocks` cannot score it)."""
        return self.previous_means is not None or method not in (PREVIOUS, BLOCKS)

    def combine(self, distances: dict[str, np.ndarray], method: str = COMBINED) -> np.ndarray:
        """A combined score of scans from each distance of them: the mean of their surprises."""
        return np.mean([surprise(self.val_scores[m], distances[m]) for m in SURPRISES[method]], axis=0)

    def threshold(self, accept_share: float, method: str = "knn") -> float:
        """The score below which `accept_share` of the validation scans fall."""
        if not 0 < accept_share <= 1:
            raise ValueError(f"accept share {accept_share!r} must be in (0, 1]")
        if method == COMBINED and COMBINED not in self.val_scores:  # an older file: no combined scores kept
            return float(-np.log(max(1 - accept_share, 1e-12)))
        return float(np.quantile(self.val_scores[method], accept_share))

    # --- the model file ------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"{PREFIX}bank": self.bank, f"{PREFIX}means": self.means, f"{PREFIX}precision": self.precision}
        if self.previous_means is not None:
            arrays.update({f"{PREFIX}previous_means": self.previous_means,
                           f"{PREFIX}previous_precision": self.previous_precision})
        arrays.update({f"{PREFIX}val_{m}": s for m, s in self.val_scores.items()})
        return arrays

    def describe(self) -> dict:
        """What the metadata records beside the hash."""
        info = {"k": self.k, "bank": int(len(self.bank)), "features": int(self.means.shape[1]),
                "validation_scans": int(len(next(iter(self.val_scores.values())))), "methods": list(self.val_scores)}
        if self.previous_means is not None:
            info["previous_features"] = int(self.previous_means.shape[1])
        return info

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
        previous = [arrays.get(f"{PREFIX}previous_{n}") for n in ("means", "precision")]
        if previous[0] is not None:
            e = previous[0].shape[1] if previous[0].ndim == 2 else -1
            if previous[0].shape != (len(means), e) or previous[1] is None or previous[1].shape != (e, e):
                raise ValueError(f"shapes of the block before do not fit: means {previous[0].shape}, precision "
                                 f"{None if previous[1] is None else previous[1].shape}")
            previous = [a.astype(np.float32) for a in previous]
        needed = METHODS + ((PREVIOUS, BLOCKS) if previous[0] is not None else ())
        val = {m: np.asarray(arrays[f"{PREFIX}val_{m}"], np.float32) for m in CHOICES
               if m in needed or f"{PREFIX}val_{m}" in arrays}
        if len({len(v) for v in val.values()}) != 1:
            raise ValueError(f"validation score lists of different lengths: {({m: len(v) for m, v in val.items()})}")
        return cls(bank, means.astype(np.float32), precision.astype(np.float32), val, k, *previous)


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


def class_gaussian(features: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C, D) and the shrunk precision of the covariance they share, float32."""
    f = np.asarray(features, np.float64)
    means = np.stack([f[labels == c].mean(axis=0) if (labels == c).any() else f.mean(axis=0)
                      for c in range(classes)])
    return means.astype(np.float32), shrunk_precision(f - means[labels]).astype(np.float32)


def build(train_features: dict[str, np.ndarray] | np.ndarray, train_labels: np.ndarray,
          val_features: dict[str, np.ndarray] | np.ndarray, classes: int, k: int = 10, seed: int = 0) -> Reference:
    """Statistics from training features, thresholds from validation features (never trained on).
    Features as `Reference.score` takes them; with "previous", the block before's statistics too."""
    train = train_features if isinstance(train_features, dict) else {"pooled": train_features}
    labels = np.asarray(train_labels)
    means, precision = class_gaussian(train["pooled"], labels, classes)
    unit = normalize(np.asarray(train["pooled"], np.float32))
    if len(unit) > MAX_BANK:
        unit = unit[np.sort(np.random.default_rng(seed).choice(len(unit), MAX_BANK, replace=False))]
    ref = Reference(unit.astype(np.float16), means, precision, {}, min(k, len(unit)))
    distances = METHODS
    if train.get("previous") is not None:
        ref.previous_means, ref.previous_precision = class_gaussian(train["previous"], labels, classes)
        distances += (PREVIOUS,)
    scored = {m: ref.score(val_features, m) for m in distances}  # each computed once
    ref.val_scores = {m: np.sort(scored[m]).astype(np.float32) for m in distances}
    for method, parts in SURPRISES.items():  # read the lists above
        if all(m in scored for m in parts):
            ref.val_scores[method] = np.sort(ref.combine(scored, method)).astype(np.float32)
    return ref
