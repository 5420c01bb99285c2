"""Deterministic train / validation / test split by near-duplicate group, stratified by class."""
from __future__ import annotations

import numpy as np


def group_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float,
                seed: int) -> dict[str, np.ndarray]:
    """Indices per split; every member of a group lands in the same split.

    Groups are assigned to the class most of their images have, shuffled per class with the
    seed, and dealt to test, then validation, until each holds its fraction of that class.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be below 1")
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(groups, return_inverse=True)
    members = [[] for _ in ids]
    for i, g in enumerate(inverse):
        members[g].append(i)
    group_label = np.array([np.bincount(labels[m]).argmax() for m in members])
    assign = np.empty(len(ids), np.int8)  # 0 train, 1 val, 2 test
    for c in np.unique(group_label):
        class_groups = np.flatnonzero(group_label == c)
        class_groups = class_groups[rng.permutation(len(class_groups))]
        total = sum(len(members[g]) for g in class_groups)
        targets = [(2, test_fraction * total), (1, val_fraction * total)]
        filled = {1: 0, 2: 0}
        for g in class_groups:
            for split, target in targets:
                if filled[split] + len(members[g]) <= target + 0.5 * len(members[g]) and filled[split] < target:
                    assign[g] = split
                    filled[split] += len(members[g])
                    break
            else:
                assign[g] = 0
    per_image = assign[inverse]
    return {name: np.flatnonzero(per_image == k) for k, name in enumerate(("train", "val", "test"))}
