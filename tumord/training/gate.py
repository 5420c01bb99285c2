"""The promotion gate: may a freshly trained candidate replace the current model?

Both models are scored on the same images: the candidate's test split minus every image the
current model trained or was validated on, together with their near-duplicates. The dataset
grows between runs, so a new split can put into test images the current model learned from;
scoring it there would flatter it, and with `--init-from current` the candidate as well. The
current model's report.json lists its train and validation files (relative to its data folder;
they are matched by that relative path). When its report is missing, or fewer than
`gate.min_images` unseen images remain, the whole test split is used and the verdict notes it:
that can only favour the current model, so the error is on the side of keeping it.

The candidate is promoted when, on those images, its accuracy and sensitivity reach the
configured minimums and neither falls below the current model's by more than `gate.max_drop`.
When the training used the site's own labelled scans (paths.training), both models are also
scored on the site's held-out test part, and the candidate must be better there (judge_site).
A candidate with other classes than the current model is never promoted automatically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tumord.data.cache import load_images
from tumord.data.dataset import list_dataset
from tumord.data.dedup import near_duplicate_groups
from tumord.data.images import read_scan
from tumord.model import checkpoint, registry
from tumord.model.checkpoint import Classifier
from tumord.training.metrics import evaluate

SCORES = ("accuracy", "sensitivity", "specificity", "balanced_accuracy", "auc", "n")


def judge(candidate: dict, current: dict | None, gate: dict) -> list[str]:
    """Reasons to keep the current model; none means promote. Metrics are evaluate() dicts."""
    if not candidate.get("n"):
        return ["no held-out images to judge the candidate on"]
    reasons = []
    for key in ("accuracy", "sensitivity"):
        if not candidate[key] >= gate[f"min_{key}"]:  # `not >=` also catches NaN
            reasons.append(f"{key} {candidate[key]:.3f} is below the minimum {gate[f'min_{key}']:.3f}")
        if current is not None and not candidate[key] >= current[key] - gate["max_drop"]:
            reasons.append(f"{key} {candidate[key]:.3f} is more than {gate['max_drop']:.3f} below "
                           f"the current model's {current[key]:.3f}")
    return reasons


def judge_site(candidate: dict, current: dict | None) -> list[str]:
    """On the site's own held-out scans the candidate must be better: a higher balanced accuracy
    (a site's labels can run 9 to 1), or an equal one and a higher AUC."""
    if current is None:
        return []
    better = (candidate["balanced_accuracy"], candidate["auc"]) > (current["balanced_accuracy"], current["auc"])
    if better:
        return []
    return [f"on the site's {candidate['n']} held-out scans, balanced accuracy {candidate['balanced_accuracy']:.3f} "
            f"(AUC {candidate['auc']:.3f}) is not better than the current model's "
            f"{current['balanced_accuracy']:.3f} (AUC {current['auc']:.3f})"]


def _site_scores(report: dict, candidate: Classifier, current: Classifier | None, names, negative) -> dict | None:
    """Both models on the site's test part (report["site"]); None without site scans to judge on."""
    site = report.get("site")
    if not site or not site["split"]["test"]:
        return None
    root = Path(site["root"])
    files = [root / f for f in site["split"]["test"]]
    y = np.array([names.index(f.split("/")[0]) for f in site["split"]["test"]])
    cand = evaluate(candidate.predict(_decode(candidate, files)), y, names, negative)
    curr = None if current is None else evaluate(current.predict(_decode(current, files)), y, names, negative)
    return {"images": len(files), "candidate_scores": {k: cand[k] for k in SCORES},
            "current_scores": None if curr is None else {k: curr[k] for k in SCORES}}


def unseen_by(test: list[int], seen: list[int], groups: np.ndarray) -> list[int]:
    """The test images whose near-duplicate group holds none of the seen images."""
    tainted = set(groups[seen].tolist())
    return [i for i in test if groups[i] not in tainted]


def _negative(cfg: dict, names: list[str]) -> str | None:
    negative = cfg["train"]["negative_class"]
    if negative in names:
        return negative
    return next((n for n in ("normal", "notumor") if n in names), None)


def _load_current(models_dir: Path) -> tuple[str | None, Classifier | None, dict | None, str | None]:
    """(version, model, report, problem) of the current model; problem says why it is unusable."""
    version = registry.current_version(models_dir)
    if version is None:
        return None, None, None, None
    try:
        model = checkpoint.load(registry.current_model_path(models_dir))
    except checkpoint.CheckpointError as e:
        return version, None, None, f"the current model cannot be loaded ({e})"
    return version, model, registry.read_report(models_dir, version), None


def _decode(model: Classifier, files: list[Path]) -> np.ndarray:
    """The files at the model's own resolution; only these few, so no second cache of the whole set."""
    size = model.preprocess.size
    return np.stack([read_scan(f, model.preprocess) for f in files]) if files else np.zeros((0, size, size), np.uint8)


def run_gate(candidate_file: Path, report: dict, data_dir: Path, models_dir: Path, cfg: dict) -> dict:
    """Scores candidate and current model on shared held-out images and decides; JSON-ready."""
    gate = cfg["registry"]["gate"]
    candidate = checkpoint.load(candidate_file)
    names = candidate.class_names
    listing = list_dataset(data_dir, names)
    index = {str(p.relative_to(listing.root)): i for i, p in enumerate(listing.files)}
    labels = np.array(listing.labels)
    test = sorted(index[f] for f in report["split"]["test"] if f in index)
    # the same file list and preprocessing as training: the cache serves it without decoding
    images, thumbs = load_images(listing.files, candidate.preprocess, cfg["paths"]["cache"])

    version, current, current_report, problem = _load_current(models_dir)
    notes = [problem] if problem else []
    blocked = None  # the service refuses a change of classes too: that needs a person and a restart
    if current is not None and current.class_names != names:
        blocked = (f"the candidate's classes {names} differ from the current model's {current.class_names}; "
                   "promote it by hand (tumord models promote) and restart the service if intended")
        current = None
    chosen, excluded = test, 0
    if current is not None:
        split = (current_report or {}).get("split")
        if split is None:
            notes.append("the current model's training images are unknown (no split in its report.json); "
                         "scored on the whole test split, which can favour it")
        else:
            seen = [index[f] for f in split.get("train", []) + split.get("val", []) if f in index]
            groups = near_duplicate_groups(thumbs, cfg["train"]["dedup_similarity"])
            unseen = unseen_by(test, seen, groups)
            if len(unseen) >= gate["min_images"]:
                chosen, excluded = unseen, len(test) - len(unseen)
            else:
                notes.append(f"only {len(unseen)} test images are unseen by the current model "
                             f"(registry.gate.min_images = {gate['min_images']}); scored on the whole "
                             "test split, which can favour it")

    negative = _negative(cfg, names)
    y = labels[chosen]
    cand = evaluate(candidate.predict(np.asarray(images[chosen])), y, names, negative)
    curr = None
    if current is not None:
        x = np.asarray(images[chosen]) if current.preprocess == candidate.preprocess else \
            _decode(current, [listing.files[i] for i in chosen])
        curr = evaluate(current.predict(x), y, names, negative)
    reasons = judge(cand, curr, gate) + ([blocked] if blocked else [])
    site = _site_scores(report, candidate, current, names, negative)
    if site is not None:
        reasons += judge_site(site["candidate_scores"], site["current_scores"])
    return {
        "promote": not reasons,
        "reasons": reasons,
        "notes": notes,
        "current": version,
        "images": len(chosen),
        "excluded_seen_by_current": excluded,
        "candidate_scores": {k: cand[k] for k in SCORES},
        "current_scores": None if curr is None else {k: curr[k] for k in SCORES},
        "thresholds": dict(gate),
        "site": site,
    }
