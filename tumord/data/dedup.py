"""Groups of near-duplicate images (the same slice saved twice, re-encoded or resized).

Each image becomes a 32x32 thumbnail, centred and scaled to unit length; two images whose
thumbnails have cosine similarity at or above the threshold are linked, and groups are the
connected components. Splitting by group keeps copies of a training image out of evaluation.
"""
from __future__ import annotations

import numpy as np


def signatures(thumbs: np.ndarray) -> np.ndarray:
    x = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-6
    return x


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_duplicate_groups(thumbs: np.ndarray, similarity: float = 0.95, block: int = 1024) -> np.ndarray:
    """Group id per image (ids are the smallest member index, so they are deterministic)."""
    sig = signatures(thumbs)
    n = len(sig)
    parent = np.arange(n)
    for start in range(0, n, block):  # blocks keep the similarity matrix small
        sims = sig[start : start + block] @ sig.T
        rows, cols = np.nonzero(sims >= similarity)
        for i, j in zip(rows + start, cols):
            if j > i:
                a, b = _find(parent, i), _find(parent, j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return np.array([_find(parent, i) for i in range(n)])


def duplicates_any_of(thumbs: np.ndarray, reference: np.ndarray, similarity: float = 0.95,
                      block: int = 1024) -> np.ndarray:
    """Per image in thumbs: does it nearly duplicate any image in reference (same test as above)?"""
    if len(reference) == 0 or len(thumbs) == 0:
        return np.zeros(len(thumbs), bool)
    sig, ref = signatures(thumbs), signatures(reference)
    return np.concatenate([(sig[i : i + block] @ ref.T).max(axis=1) >= similarity
                           for i in range(0, len(sig), block)])
