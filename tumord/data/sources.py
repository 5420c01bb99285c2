"""Sources: labelled collections from different places (datasets, scanners, hospitals).

A source is one or more folders with one subfolder per class and a class map for subfolders that
are not the model's classes (e.g. glioma=tumor). Images of several sources are grouped into
near-duplicates together, so a scan saved in two sources is one group, and each group lands in
one split. The split is stratified by source and class, so every source keeps its own
validation and test part and can be reported on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumord.data.cache import load_images
from tumord.data.dataset import list_dataset
from tumord.data.dedup import duplicates_any_of, near_duplicate_groups
from tumord.data.images import Preprocess
from tumord.data.split import group_split


def parse_class_map(pairs: list[str] | dict[str, str], class_names: list[str], what: str) -> dict[str, str]:
    """["glioma=tumor", ...] (or a mapping) -> {"glioma": "tumor"}; every target a model class."""
    items = pairs.items() if isinstance(pairs, dict) else [p.partition("=")[::2] for p in pairs]
    mapping = {}
    for source, target in items:
        if not source or target not in class_names:
            raise ValueError(f"{what}: {source}={target} is not valid; expected FOLDER=CLASS with CLASS one of "
                             f"{', '.join(class_names)}")
        mapping[source] = target
    return mapping


@dataclass(frozen=True)
class Source:
    name: str
    roots: tuple[Path, ...]
    class_map: dict[str, str] = field(default_factory=dict)  # folder name -> model class

    @classmethod
    def of(cls, name: str, *roots: str | Path, class_map: dict[str, str] | None = None) -> "Source":
        return cls(name, tuple(Path(r) for r in roots), dict(class_map or {}))

    def list(self, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
        """(files, model-class labels) of every root; a folder that maps to no class is an error."""
        files, labels = [], []
        for root in self.roots:
            listing = list_dataset(root)
            for name in listing.class_names:
                target = self.class_map.get(name, name)
                if target not in class_names:
                    raise ValueError(f"source {self.name}: {Path(root) / name}/ matches no class "
                                     f"({', '.join(class_names)}); map it, e.g. {name}={class_names[0]}")
            files += listing.files
            labels += [class_names.index(self.class_map.get(listing.class_names[c], listing.class_names[c]))
                       for c in listing.labels]
        return files, np.array(labels, dtype=np.int64)


@dataclass
class SourceSet:
    """Images of several sources in one array, with their labels, source and near-duplicate group."""
    names: list[str]
    class_names: list[str]
    files: list[Path]
    images: np.ndarray  # (N, size, size) uint8
    thumbs: np.ndarray  # (N, 32, 32) uint8
    labels: np.ndarray
    source: np.ndarray  # index into names, per image
    groups: np.ndarray  # near-duplicate group, across sources

    def of(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.source == self.names.index(name))


def load_sources(sources: list[Source], class_names: list[str], pre: Preprocess, cache_dir,
                 similarity: float = 0.95) -> SourceSet:
    if len({s.name for s in sources}) != len(sources):
        raise ValueError(f"source names must differ: {[s.name for s in sources]}")
    files, labels, which, images, thumbs = [], [], [], [], []
    for k, src in enumerate(sources):
        f, y = src.list(class_names)
        for root in src.roots:  # one cache per folder, shared with `tumord train --data` on that folder
            part = [p for p in f if Path(root) in p.parents]
            imgs, th = load_images(part, pre, cache_dir)
            images.append(np.asarray(imgs))
            thumbs.append(np.asarray(th))
        files += f
        labels.append(y)
        which.append(np.full(len(f), k))
    thumbs_all = np.concatenate(thumbs)
    return SourceSet([s.name for s in sources], list(class_names), files, np.concatenate(images), thumbs_all,
                     np.concatenate(labels), np.concatenate(which),
                     near_duplicate_groups(thumbs_all, similarity))


def split_sources(labels: np.ndarray, source: np.ndarray, groups: np.ndarray, val_fraction: float,
                  test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Group-aware split stratified by (source, class): each source gets its own val and test part.

    A group that spans sources goes with the source (and class) most of its images have. With one
    source this is exactly group_split, so single-folder splits do not change.
    """
    strata = source.astype(np.int64) * (int(labels.max(initial=0)) + 1) + labels
    return group_split(strata, groups, val_fraction, test_fraction, seed)


def unseen(thumbs: np.ndarray, candidates: np.ndarray, seen: np.ndarray, similarity: float = 0.95) -> np.ndarray:
    """The candidate indices whose image nearly duplicates none of the seen images (for testing on
    another source: a scan the model trained on, saved again elsewhere, is not a new scan)."""
    candidates = np.asarray(candidates)
    return candidates[~duplicates_any_of(thumbs[candidates], thumbs[np.asarray(seen)], similarity)]
