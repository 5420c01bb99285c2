"""Probabilities plus the decision to abstain, for a batch of scans, in one pass of the network.

A scan is judged as always (the probabilities are still given), and the verdict says whether
the model abstained and why: the input checks' reasons, and/or a feature distance past the
threshold that lets `accept_share` of the validation scans through.
"""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from tumord.abstain.checks import InputChecks
from tumord.model.features import features_and_logits
from tumord.nn.feature_distance import COMBINED, SURPRISES
from tumord.nn.losses import softmax


@dataclass(frozen=True)
class AbstainSettings:
    enabled: bool = True
    method: str = "blocks"
    accept_share: float = 0.95
    checks: InputChecks = field(default_factory=InputChecks)

    @classmethod
    def from_config(cls, cfg: dict) -> "AbstainSettings":
        a = cfg["abstain"]  # checked against the settings table already
        return cls(a["enabled"], a["method"], a["accept_share"], InputChecks.from_config(a))


@dataclass
class Judgement:
    probabilities: np.ndarray
    reasons: list[str]
    distance: float | None = None  # None: the model file has no reference features
    threshold: float | None = None
    method: str | None = None

    @property
    def abstained(self) -> bool:
        return bool(self.reasons)

    @property
    def relative_distance(self) -> float | None:
        return None if self.distance is None or not self.threshold else self.distance / self.threshold

    def fields(self) -> dict:
        """The verdict JSON's abstention fields."""
        distance = None if self.distance is None else {
            "value": round(self.distance, 6), "threshold": round(self.threshold, 6), "method": self.method}
        return {"abstained": self.abstained, "abstain_reasons": list(self.reasons), "feature_distance": distance}



def judge(model, images: np.ndarray, check_reasons: list[list[str]] | None = None,
          settings: AbstainSettings = AbstainSettings(), pool: Executor | None = None) -> list[Judgement]:
    """uint8 (N, size, size) scans and their input-check reasons -> one Judgement each."""
    feats, logits = features_and_logits(model.net, images, model.batch_size, pool)
    probs = softmax(logits / model.temperature)
    check_reasons = check_reasons or [[] for _ in range(len(images))]
    ref = model.reference if settings.enabled else None
    if ref is None or feats is None:
        return [Judgement(p, list(r) if settings.enabled else []) for p, r in zip(probs, check_reasons)]
    method = settings.method if ref.available(settings.method) else COMBINED  # a file made before it
    distances = ref.score(feats, method)
    threshold = ref.threshold(settings.accept_share, method)
    what = f"{method} feature score" if method in SURPRISES else "feature distance"
    out = []
    for p, r, d in zip(probs, check_reasons, distances):
        reasons = list(r)
        if d > threshold:
            reasons.append(f"unlike the training scans ({what} {d:.3f} > {threshold:.3f})")
        out.append(Judgement(p, reasons, float(d), threshold, method))
    return out
