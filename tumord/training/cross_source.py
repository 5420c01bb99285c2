"""Leave-one-source-out evaluation: train on one source, judge on scans of another.

The project's two sources are the binary set and the 4-class set (glioma, meningioma and
pituitary mapped to tumor, notumor to normal). Both are loaded together so near-duplicates are
grouped across them, and split group-aware per source (70/15/15). A model trained on source A
is judged on B's validation part (for choosing recipes), less every scan nearly duplicating one the
model trained on, and B's test part (reported once), less every scan nearly duplicating one it
trained or was validated on (`judged_parts`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumord.data.images import Preprocess
from tumord.data.sources import Source, SourceSet, load_sources, split_sources, unseen
from tumord.nn.losses import softmax
from tumord.training.metrics import evaluate

CLASSES = ["normal", "tumor"]
FOUR_CLASS_MAP = {"glioma": "tumor", "meningioma": "tumor", "pituitary": "tumor", "notumor": "normal"}
HEADLINE = ("n", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc", "ece")


def project_sources(datasets: Path) -> list[Source]:
    four = datasets / "brain-tumor-4class"
    return [Source.of("binary", datasets / "brain-tumor"),
            Source.of("4class", four / "train", four / "test", class_map=FOUR_CLASS_MAP)]


@dataclass
class Loso:
    data: SourceSet
    split: dict[str, np.ndarray]

    def part(self, source: str, split: str) -> np.ndarray:
        return np.intersect1d(self.data.of(source), self.split[split])

    def other(self, source: str) -> str:
        return next(n for n in self.data.names if n != source)

    def unseen_part(self, source: str, split: str, seen: np.ndarray) -> np.ndarray:
        """Source's split part less every scan nearly duplicating a seen one."""
        return unseen(self.data.thumbs, self.part(source, split), seen)

    def judged_parts(self, other: str, train: np.ndarray, val: np.ndarray) -> dict[str, np.ndarray]:
        """The other source's validation and test parts for a model trained on `train`, stopped early on `val`.

        Validation leaves out copies of the training scans only. Copies of the model's validation
        scans served just early stopping and temperature, an advantage every recipe shares; leaving
        them out too leaves no normal scans there (the two sets' normals are nearly all shared, and
        a shared group lies whole in one split), so AUC would be undefined where recipes are chosen.
        Test, reported once and never chosen on, leaves out copies of both.
        """
        return {"val": self.unseen_part(other, "val", train),
                "test": self.unseen_part(other, "test", np.concatenate([train, val]))}

    def describe(self, idx: np.ndarray) -> str:
        """'N scans (M normal)', for logs."""
        return f"{len(idx)} scans ({int(np.sum(self.data.labels[idx] == CLASSES.index('normal')))} normal)"


def load_loso(datasets: Path, pre: Preprocess, cache_dir, similarity: float = 0.95, seed: int = 0,
              fractions: tuple[float, float] = (0.15, 0.15)) -> Loso:
    data = load_sources(project_sources(datasets), CLASSES, pre, cache_dir, similarity)
    return Loso(data, split_sources(data.labels, data.source, data.groups, *fractions, seed))


def headline(probs: np.ndarray, labels: np.ndarray) -> dict:
    m = evaluate(probs, labels, CLASSES, "normal")
    return {**{k: m[k] for k in HEADLINE}, "normals": m["per_class"]["normal"]["support"]}


def scores(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict:
    return headline(softmax(logits / temperature), labels)
