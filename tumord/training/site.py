"""The site's own labelled scans (paths.training, filled by `tumord feedback`) in retraining.

A hospital's scans differ from the public sources the model learned on; a few hundred of its own
labelled scans are what adapts the model (issue 14). They are split group-aware into training,
validation and test parts. The training part is sampled at a set share of every epoch
(`train.site.share`), class-balanced within each source, so 200 site scans are not drowned by
thousands of public ones and a site whose labels run 9 to 1 does not teach the model to answer
"tumor" always. The decision threshold is chosen on the site's validation part and folded into
the last layer's bias (a prior shift), so every caller's argmax applies it; the gate judges on the
site's test part.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumord.data.cache import load_images
from tumord.data.dataset import Listing
from tumord.data.dedup import near_duplicate_groups
from tumord.data.images import IMAGE_SUFFIXES, Preprocess
from tumord.data.split import group_split
from tumord.nn.layers import Dense
from tumord.nn.network import Network


@dataclass
class Site:
    listing: Listing
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    split: dict[str, np.ndarray]


def list_site(root: Path, class_names: list[str]) -> Listing | None:
    """The labelled scans under root/<class>/ (class folders may be missing: a site may have
    labelled only tumors so far); None when there are none. Other folders are an error."""
    root = Path(root)
    if not root.is_dir():
        return None
    strange = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in class_names)
    if strange:
        raise ValueError(f"paths.training {root}: folders {strange} are not classes of the model "
                         f"({', '.join(class_names)})")
    files, labels = [], []
    for label, name in enumerate(class_names):
        for p in sorted((root / name).glob("*")) if (root / name).is_dir() else []:
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."):
                files.append(p)
                labels.append(label)
    return Listing(root, list(class_names), files, labels) if files else None


def load_site(root: Path, class_names: list[str], pre: Preprocess, cfg: dict) -> Site | None:
    """The site's scans split by near-duplicate group; None below train.site.min_images."""
    listing = list_site(root, class_names)
    s = cfg["train"]["site"]
    if listing is None or len(listing.files) < s["min_images"]:
        return None
    images, thumbs = load_images(listing.files, pre, cfg["paths"]["cache"])
    labels = np.array(listing.labels)
    groups = near_duplicate_groups(thumbs, cfg["train"]["dedup_similarity"])
    split = group_split(labels, groups, s["val_fraction"], s["test_fraction"], cfg["train"]["split_seed"])
    return Site(listing, np.asarray(images), labels, groups, split)


def sampling_weights(labels: np.ndarray, is_site: np.ndarray, site_share: float) -> np.ndarray:
    """Per-image probability of being drawn: the site gets site_share of all draws, the rest the
    other sources; within each, every class present gets an equal share."""
    w = np.zeros(len(labels))
    for part, share in ((is_site, site_share), (~is_site, 1 - site_share)):
        present = np.unique(labels[part])
        for c in present:
            members = part & (labels == c)
            w[members] = share / len(present) / members.sum()
    return w / w.sum()


def finetune_draws(site_train: int, share: float, total: int, batch_size: int) -> int:
    """Images per fine-tuning epoch: enough for each site training scan to come up about twice at
    its share (at least 8 batches), never more than a plain epoch. A fine-tune on 200 site scans
    then takes minutes, not the hour of a pass over every public scan per epoch."""
    return int(min(total, max(8 * batch_size, np.ceil(2 * site_train / share))))


def choose_threshold(p_positive: np.ndarray, positive: np.ndarray, min_per_class: int = 1) -> float:
    """The P(positive) threshold with the best balanced accuracy (Youden's J); 0.5 when either class
    has fewer than `min_per_class` scans: on a handful of normals the best threshold swings from
    0.06 to 0.9 (docs/cross-source.md). Taken midway between neighbouring scores, so it does not
    sit on a scan."""
    if min(positive.sum(), (~positive).sum()) < max(min_per_class, 1):
        return 0.5
    s = np.unique(p_positive)
    candidates = np.r_[(s[:-1] + s[1:]) / 2, 0.5]
    j = [((p_positive >= t) & positive).sum() / positive.sum() - ((p_positive >= t) & ~positive).sum()
         / (~positive).sum() for t in candidates]
    best = np.flatnonzero(np.isclose(j, np.max(j)))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])  # of equals, nearest 0.5


def fold_threshold(net: Network, threshold: float, temperature: float, negative: int, positive: int) -> None:
    """Shifts the output bias so argmax says positive exactly where P(positive) >= threshold
    (probabilities after temperature scaling): z_pos - z_neg >= T * logit(threshold)."""
    last = next(layer for layer in reversed(net.layers) if isinstance(layer, Dense))
    shift = temperature * float(np.log(threshold / (1 - threshold))) / 2
    last.params["b"][positive] -= shift
    last.params["b"][negative] += shift

