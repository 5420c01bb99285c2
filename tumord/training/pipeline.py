"""From a labelled folder to an evaluated, calibrated model: data, split, training, report."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumord.abstain.fit import fit_reference
from tumord.atomic import write_atomic
from tumord.data.cache import load_images
from tumord.data.dataset import list_dataset
from tumord.data.dedup import near_duplicate_groups
from tumord.data.images import preprocess_from_config
from tumord.data.split import group_split
from tumord.logs import get_logger
from tumord.model import checkpoint
from tumord.model.predict import predict_logits
from tumord.nn.losses import softmax
from tumord.training.calibration import fit_temperature
from tumord.training.extra_data import Extra, load_extra
from tumord.training.intervals import group_bootstrap
from tumord.training.metrics import evaluate, expected_calibration_error
from tumord.training.report import format_metrics, write_figure
from tumord.training.site import (Site, choose_threshold, finetune_draws, fold_threshold, load_site,
                                  sampling_weights)
from tumord.training.trainer import History, build_network, fit

log = get_logger("tumord.train")


@dataclass
class Prepared:
    listing: object
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    split: dict[str, np.ndarray]
    extra: Extra | None = None  # training-only images from train.extra_data

    def training_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, labels, training indices): the main data's, with the extra images appended."""
        if self.extra is None:
            return self.images, self.labels, self.split["train"]
        n = len(self.labels)
        return (np.concatenate([np.asarray(self.images), self.extra.images]),
                np.concatenate([self.labels, self.extra.labels]),
                np.concatenate([self.split["train"], n + np.arange(len(self.extra.labels))]))


def prepare(data_dir: Path, cfg: dict, class_names: list[str] | None = None) -> Prepared:
    train_cfg = cfg["train"]
    pre = preprocess_from_config(cfg)
    listing = list_dataset(data_dir, class_names)
    images, thumbs = load_images(listing.files, pre, cfg["paths"]["cache"])
    labels = np.array(listing.labels)
    groups = near_duplicate_groups(thumbs, train_cfg["dedup_similarity"])
    split = group_split(labels, groups, train_cfg["val_fraction"], train_cfg["test_fraction"],
                        train_cfg["split_seed"])
    extra = None
    if train_cfg["extra_data"]:
        held_out = np.asarray(thumbs)[np.concatenate([split["val"], split["test"]])]
        extra = load_extra(train_cfg["extra_data"], train_cfg["extra_classes"], listing.class_names, pre,
                           cfg["paths"]["cache"], held_out, train_cfg["dedup_similarity"])
    return Prepared(listing, images, labels, groups, split, extra)


def _progress(row: dict) -> None:
    # a person at a terminal reads one line per epoch; programs and the journal get the event
    if not sys.stderr.isatty():
        log.info("epoch", **row)
        return
    eta = int(row["eta_seconds"])
    print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}  "
          f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}  lr {row['lr']:.2e}  "
          f"{row['seconds']:.1f}s  left ~{eta // 60}m{eta % 60:02d}s{'  *' if row['best'] else ''}",
          file=sys.stderr, flush=True)


def split_record(data: Prepared) -> dict:
    """Each part's file names, relative to the data folder (report.json's split)."""
    root = data.listing.root
    return {
        name: sorted(str(data.listing.files[i].relative_to(root)) for i in idx) for name, idx in data.split.items()
    }


def _adapt_to_site(net, site: Site, names: list[str], negative: str, temperature: float,
                   min_per_class: int) -> dict:
    """Threshold from the site's validation part folded into the network; scores on its test part."""
    threshold = None
    if negative in names and len(names) == 2:
        neg, pos = names.index(negative), 1 - names.index(negative)
        p_val = softmax(predict_logits(net, site.images, site.split["val"]) / temperature)[:, pos]
        positive = site.labels[site.split["val"]] == pos
        value = choose_threshold(p_val, positive, min_per_class)
        fold_threshold(net, value, temperature, neg, pos)
        fewest = int(min(positive.sum(), (~positive).sum()))
        threshold = {"value": value, "images": int(len(site.split["val"])), "fewest_of_a_class": fewest,
                     "chosen_on": "site validation part" if fewest >= min_per_class else
                     f"none: the site's validation part has {fewest} scans of a class, "
                     f"train.site.min_threshold_scans is {min_per_class}; 0.5 kept"}
        if fewest < min_per_class:
            log.warning("site.threshold_kept", fewest_of_a_class=fewest, needed=min_per_class)
    test = site.split["test"]
    probs = softmax(predict_logits(net, site.images, test) / temperature)
    root = site.listing.root
    return {"root": str(root.resolve()), "images": int(len(site.labels)),
            "per_class": {n: int((site.labels == c).sum()) for c, n in enumerate(names)},
            "threshold": threshold, "test": evaluate(probs, site.labels[test], names, negative),
            "split": {k: sorted(str(site.listing.files[i].relative_to(root)) for i in v) for k, v in site.split.items()}}


def train(data_dir: Path, cfg: dict, staging: Path, init_from: checkpoint.Classifier | None = None) -> dict:
    """Trains, calibrates and evaluates; writes model.npz, report.json, report.png into staging."""
    train_cfg = cfg["train"]
    class_names = init_from.class_names if init_from else None
    data = prepare(data_dir, cfg, class_names)
    names = data.listing.class_names
    split = data.split
    if min(len(split["train"]), len(split["val"]), len(split["test"])) == 0:
        raise ValueError(f"{data_dir}: too few images to split into train/validation/test ({len(data.labels)})")
    log.info("data", root=str(data_dir), images=len(data.labels), groups=int(len(np.unique(data.groups))),
             train=len(split["train"]), val=len(split["val"]), test=len(split["test"]))
    rng = np.random.default_rng(train_cfg["seed"])
    net = build_network(cfg["model"], cfg["preprocess"]["size"], len(names), rng)
    if init_from is not None:
        if init_from.net.spec != net.spec or init_from.net.input_shape != net.input_shape:
            raise ValueError(f"--init-from: {init_from.path} has a different architecture than the settings")
        net.load_state_dict(init_from.net.state_dict())
    if data.extra is not None:
        log.info("extra_data", folders=data.extra.summary)
    pre = preprocess_from_config(cfg)
    site = load_site(Path(cfg["paths"]["training"]), names, pre, cfg) if cfg["paths"]["training"] else None
    images, labels, train_idx = data.training_set()
    val_idx, weights, draws = split["val"], None, None
    fit_cfg = train_cfg
    if site is not None:
        n = len(labels)
        log.info("site", root=str(site.listing.root), images=len(site.labels),
                 **{k: len(v) for k, v in site.split.items()})
        images, labels = np.concatenate([np.asarray(images), site.images]), np.concatenate([labels, site.labels])
        train_idx = np.concatenate([train_idx, n + site.split["train"]])
        val_idx = np.concatenate([val_idx, n + site.split["val"]])  # early stopping and temperature see both
        weights = sampling_weights(labels[train_idx], train_idx >= n, train_cfg["site"]["share"])
        if init_from is not None:
            draws = finetune_draws(len(site.split["train"]), train_cfg["site"]["share"], len(train_idx),
                                   train_cfg["batch_size"])
    if init_from is not None:  # fine-tuning: a short schedule at a low rate keeps what the model knew
        fit_cfg = {**train_cfg, "epochs": train_cfg["finetune_epochs"], "lr": train_cfg["finetune_lr"],
                   "patience": train_cfg["finetune_epochs"]}
    hist: History = fit(net, images, labels, train_idx, val_idx, fit_cfg, rng, _progress, weights, draws)
    reference = fit_reference(net, images, labels, train_idx, images, val_idx)  # for abstention; the site's too

    y_va, y_te = labels[val_idx], data.labels[split["test"]]
    val_logits = predict_logits(net, images, val_idx)
    temperature = fit_temperature(val_logits, y_va)
    site_report = (_adapt_to_site(net, site, names, train_cfg["negative_class"], temperature,
                                  train_cfg["site"]["min_threshold_scans"])
                   if site is not None else None)
    del images, labels
    test_logits = predict_logits(net, data.images, split["test"])
    probs = softmax(test_logits / temperature)
    metrics = evaluate(probs, y_te, names, train_cfg["negative_class"])
    metrics["intervals"] = group_bootstrap(probs, y_te, data.groups[split["test"]], names, train_cfg["negative_class"])
    calibration = {
        "temperature": temperature,
        "val_ece_before": expected_calibration_error(softmax(val_logits), y_va),
        "val_ece_after": expected_calibration_error(softmax(val_logits / temperature), y_va),
        "test_ece_before": expected_calibration_error(softmax(test_logits), y_te),
        "test_ece_after": metrics["ece"],
    }
    summary = {
        "data_root": str(Path(data_dir).resolve()),
        "images": int(len(data.labels)),
        "per_class": {n: int((data.labels == c).sum()) for c, n in enumerate(names)},
        "near_duplicate_groups": int(len(np.unique(data.groups))),
        "split_seed": train_cfg["split_seed"],
        "seed": train_cfg["seed"],
        "split_sizes": {k: int(len(v)) for k, v in split.items()},
        "extra_training_data": data.extra.summary if data.extra is not None else [],
        "initialized_from": init_from.identity if init_from is not None else None,
        "epochs_run": len(hist.epochs), "best_epoch": hist.best_epoch, "train_seconds": round(hist.seconds, 1),
    }
    meta = checkpoint.new_metadata(net, names, pre, temperature=temperature,
                                   training={"summary": summary, "settings": cfg["train"], "model": cfg["model"]},
                                   metrics={"test": metrics, "calibration": calibration,
                                            "site": site_report and site_report["test"]},
                                   threshold=site_report and site_report["threshold"])
    meta = checkpoint.save(staging / "model.npz", net, meta, reference)
    report = {"model": {"version": meta["version"], "sha256": meta["weights_sha256"]}, "test": metrics,
              "calibration": calibration, "summary": summary, "history": hist.epochs, "split": split_record(data),
              "site": site_report}
    write_atomic(staging / "report.json", json.dumps(report, indent=1))
    write_figure(staging / "report.png", hist.epochs, probs, y_te, metrics, train_cfg["negative_class"])
    print(format_metrics(metrics, f"Test split of {data_dir}"), file=sys.stderr)
    print(f"  calibration: temperature {temperature:.3f}, test ECE {calibration['test_ece_before']:.4f} -> "
          f"{calibration['test_ece_after']:.4f}", file=sys.stderr)
    if site_report is not None:
        print(format_metrics(site_report["test"], f"Site test part of {site_report['root']}"), file=sys.stderr)
    return {"meta": meta, "report": report}
