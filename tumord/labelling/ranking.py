"""`tumord review`: which archived scans a label would teach the model most.

Each candidate is judged again by the current model. Two signs that a label is worth having:
the model is unsure (its top probability is near chance) and the scan is far from the training
data in feature space (the abstention score). Candidates are ordered by the mean of their
percentile ranks on the two, so neither scale dominates. Scans that fail the input checks (blank,
colour, tiny) are left out: a label would not make them brain MR slices. Scans already labelled
with `tumord feedback` are left out too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumord.abstain.judge import AbstainSettings, judge
from tumord.data.images import ImageError, read_decoded, resize, to_gray_uint8
from tumord.labelling.filing import provenance_files, stem_of
from tumord.labelling.verdicts import all_verdicts


@dataclass
class Candidate:
    verdict: str
    scan: Path
    image: np.ndarray
    label: str = ""
    confidence: float = 0.0
    uncertainty: float = 0.0  # 0: certain, 1: at chance
    distance: float | None = None  # relative to the abstention threshold: above 1 would abstain
    priority: float = 0.0


def candidates(output: Path, training: Path, model, settings: AbstainSettings) -> tuple[list[Candidate], int]:
    """Archived, unlabelled scans that pass the input checks; and how many were left out by the checks."""
    found, refused = [], 0
    for _, record in all_verdicts(output):
        scan = Path(record.get("archived_as") or "")
        if not record.get("archived_as") or not scan.is_file() or provenance_files(training, stem_of(record)):
            continue
        try:
            raw = read_decoded(scan)
        except ImageError:
            continue
        if settings.checks.reasons(raw):
            refused += 1
            continue
        found.append(Candidate(record["verdict"], scan, resize(to_gray_uint8(raw, scan), model.preprocess)))
    return found, refused


def _percentile_ranks(values: np.ndarray) -> np.ndarray:
    return values.argsort(kind="stable").argsort() / max(len(values) - 1, 1)


def priorities(uncertainty: list[float], distance: list[float] | None) -> np.ndarray:
    """The mean of the two percentile ranks; a model without a reference ranks on certainty alone."""
    p = _percentile_ranks(np.asarray(uncertainty))
    return p if distance is None else (p + _percentile_ranks(np.asarray(distance))) / 2


def rank(found: list[Candidate], model, settings: AbstainSettings) -> list[Candidate]:
    """Fills in each candidate's figures and returns them, most worth labelling first."""
    if not found:
        return []
    judged = judge(model, np.stack([c.image for c in found]), None, settings)
    classes = len(model.class_names)
    for c, j in zip(found, judged):
        top = float(j.probabilities.max())
        c.label, c.confidence = model.class_names[int(j.probabilities.argmax())], top
        c.uncertainty = (1 - top) / (1 - 1 / classes)
        c.distance = j.relative_distance
    distances = None if any(c.distance is None for c in found) else [c.distance for c in found]
    for c, p in zip(found, priorities([c.uncertainty for c in found], distances)):
        c.priority = float(p)
    return sorted(found, key=lambda c: (-c.priority, c.verdict))
