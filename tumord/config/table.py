"""Every setting, once: its default, type, allowed values, bounds and what it is for.

The defaults (`DEFAULTS`), the checks in `tumord.config.validate` and the shipped config.yaml (printed
by `python -m tumord.config`, kept equal by a test) are all derived from `TABLE`.
A setting's type is its default's type; an int is accepted where a float is expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    default: Any
    doc: str = ""  # the comment in config.yaml; a newline starts a continuation line
    choices: tuple = ()
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None
    expect: str = ""  # what the error message says is expected, when the bounds alone say it badly

    def expected(self) -> str:
        if self.expect:
            return self.expect
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low = (f"at least {self.at_least}" if self.at_least is not None
               else f"above {self.above}" if self.above is not None else "")
        high = (f"below {self.below}" if self.below is not None
                else f"at most {self.at_most}" if self.at_most is not None else "")
        if low == "above 0" and not high:
            return "a positive number"
        return "a number " + " and ".join(filter(None, [low, high]))

    def allows(self, value) -> bool:
        if self.choices:
            return value in self.choices
        return ((self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above)
                and (self.below is None or value < self.below) and (self.at_most is None or value <= self.at_most))


POSITIVE = {"above": 0}
NOT_NEGATIVE = {"at_least": 0}
SHARE = {"at_least": 0, "at_most": 1}  # a fraction, a probability or a similarity

HEADER = """\
# tumord settings. Every command reads this file from the working folder (or --config FILE);
# `--set section.key=value` overrides one setting for one run. Unknown keys are errors.
# This file is printed by `python -m tumord.config` from the table in tumord/config/table.py."""

SECTIONS = {
    "registry": "models/: versions/<version>/, current.json, and how `tumord train` promotes",
    "registry.gate": "a new model becomes current only if, on the shared held-out images, it passes these",
    "watch": "tumord watch: the folder-watching service",
    "abstain": "saying when a scan is beyond the model (docs/abstention.md)",
    "dicom": "DICOM in and out (docs/dicom.md); needs pip install 'tumord[dicom]'",
    "http": "tumord watch's HTTP server: health, Prometheus metrics, a web page (docs/http.md)",
}

TABLE: dict[str, Any] = {
    "paths": {
        "input": Key("input", "the service watches this folder for new scans"),
        "output": Key("output", "verdicts (JSON per scan, verdicts.csv), archive/ and failed/"),
        "models": Key("models", "model registry: versions/<version>/ and current.json"),
        "cache": Key(".cache/tumord", "decoded training images (uint8), reused while files are unchanged"),
        "training": Key("training", "labelled scans filed by `tumord feedback`, one subfolder per class;\n"
                                    "tumord train adapts to them (docs/cross-source.md)"),
    },
    "preprocess": {
        "size": Key(128, "scans become size x size grayscale; stored in each model file", **POSITIVE),
        "crop": Key(False, "crop to the head before resizing"),
        "normalize": Key("none", "none, or head_percentile: stretch the head's 1st-99th percentiles to 0..255",
                         choices=("none", "head_percentile")),
    },
    "model": {
        "architecture": Key("cnn", "cnn, or mlp: the original fully connected design (configs/mlp300.yaml)",
                            choices=("mlp", "cnn")),
        "hidden": Key(512, "mlp: hidden units", **POSITIVE),
        "dropout": Key(0.2, "dropout before the last layer", at_least=0, below=1),
        "batchnorm": Key(True, "mlp: batch normalization after the hidden layer"),
        "channels": Key([16, 32, 64, 128, 256], "cnn: channels of the conv blocks"),
    },
    "train": {
        "seed": Key(0, "initialization, shuffling, augmentation and dropout", **NOT_NEGATIVE),
        "split_seed": Key(0, "the train/validation/test split; kept when seed changes, so runs with\n"
                             "other seeds are judged on the same scans", **NOT_NEGATIVE),
        "epochs": Key(40, "at most; early stopping may end sooner", **POSITIVE),
        "batch_size": Key(32, **POSITIVE),
        "optimizer": Key("adamw", "adamw, or sgd (with momentum)", choices=("sgd", "adamw")),
        "lr": Key(0.003, "base (or peak, for one_cycle) learning rate", **NOT_NEGATIVE),
        "momentum": Key(0.9, "sgd only", at_least=0, below=1),
        "weight_decay": Key(0.05, "decoupled for adamw, L2 for sgd; weights only, not biases", **NOT_NEGATIVE),
        "schedule": Key("one_cycle", "one_cycle (the shipped CNN), step (lr * lr_decay^epoch: configs/mlp300.yaml),\n"
                                     "or warmup_cosine (short runs: the trainer tests' AdamW recipe)",
                        choices=("step", "warmup_cosine", "one_cycle")),
        "lr_decay": Key(0.95, "step schedule: factor per epoch", **POSITIVE),
        "warmup_epochs": Key(1, "warmup_cosine only", **NOT_NEGATIVE),
        "patience": Key(40, "early stopping: epochs without a better validation loss (40: the\n"
                            "schedule sets the length; the best validation epoch is kept)", **POSITIVE),
        "label_smoothing": Key(0.05, at_least=0, below=1),
        "mixup": Key(0.2, "mixup: train on blends of image pairs and of their labels, the share drawn\n"
                          "from Beta(mixup, mixup); 0: off", **NOT_NEGATIVE,
                     expect="0 (off) or a positive Beta parameter, e.g. 0.2"),
        "precise_bn_batches": Key(20, "batch-norm statistics recomputed from this many plain training batches\n"
                                      "before each validation, and from all of them for the final model\n"
                                      "(the running averages lag the weights); 0: keep the running averages",
                                  **NOT_NEGATIVE),
        "init": Key("current", "fine-tune the current model when it fits these settings, or scratch\n"
                               "(tumord train --from-scratch does that once)", choices=("current", "scratch")),
        "finetune_epochs": Key(5, "fine-tuning: epochs and peak learning rate, in place of epochs and lr",
                               **POSITIVE),
        "finetune_lr": Key(0.001, **NOT_NEGATIVE),
        "site": {
            "share": Key(0.5, "share of each epoch's draws that are the site's labelled scans (paths.training);\n"
                              "the site and the other sources are each drawn class-balanced", **SHARE),
            "min_images": Key(20, "fewer site scans are not used", **POSITIVE),
            "val_fraction": Key(0.2, "held out by near-duplicate group: the decision threshold is chosen here",
                                above=0, below=1),
            "test_fraction": Key(0.2, "held out for the gate: a candidate must be better on these", above=0, below=1),
            "min_threshold_scans": Key(10, "the threshold is chosen on the validation part only when it holds\n"
                                           "this many scans of each class; else 0.5 stays", **POSITIVE),
        },
        "extra_data": Key([], "more labelled folders, for training only; their images that nearly\n"
                              "duplicate a validation or test image are left out"),
        "extra_classes": Key([], "their class folders that are not the model's classes, as FOLDER=CLASS,\n"
                                 "e.g. [glioma=tumor, notumor=normal]"),
        "val_fraction": Key(0.15, "of each class, by near-duplicate group", above=0, below=1),
        "test_fraction": Key(0.15, above=0, below=1),
        "dedup_similarity": Key(0.95, "thumbnails at least this similar (cosine) are one near-duplicate group",
                                **SHARE),
        "negative_class": Key("normal", "the class that is not a tumor, for sensitivity and specificity"),
        "augment": {
            "enabled": Key(True),
            "flip": Key(True, "horizontal flips"),
            "rotate_deg": Key(10.0, "up to +-this many degrees", **NOT_NEGATIVE),
            "scale": Key(0.1, "up to +-10 % zoom", at_least=0, below=1),
            "shift": Key(0.08, "up to +-8 % of the size", at_least=0, below=1),
            "brightness": Key(0.1, **SHARE),
            "contrast": Key(0.1, at_least=0, below=1),
            "gamma": Key(0.0, "domain augmentation (0: off): gamma exponent e^u, u in +-gamma", **NOT_NEGATIVE),
            "blur": Key(0.0, "Gaussian blur or unsharp masking, sigma up to this (pixels)", **NOT_NEGATIVE),
            "noise": Key(0.0, "Gaussian noise, std up to this share of 255", **SHARE),
            "bias_field": Key(0.0, "smooth multiplicative field, polynomial coefficients in +-bias_field/2",
                              **NOT_NEGATIVE),
        },
    },
    "abstain": {
        "enabled": Key(True, "false: verdicts never abstain (probabilities are unchanged)"),
        "method": Key("blocks", "feature distance: knn (nearest training scan), mahalanobis (class means),\n"
                             "mahalanobis_previous (class means of the block before the last), combined (knn\n"
                             "and mahalanobis, each as its share of validation scans farther) or blocks\n"
                             "(those three so; a model file without the block before's statistics: combined)",
                      choices=("knn", "mahalanobis", "mahalanobis_previous", "combined", "blocks")),
        "accept_share": Key(0.95, "the distance threshold lets this share of the validation scans through",
                            above=0, at_most=1),
        "min_side": Key(64, "scans whose shorter side is under this many pixels are too small", **NOT_NEGATIVE),
        "max_aspect": Key(2.5, "longer side over shorter side above this: not a brain slice", at_least=1),
        "min_contrast": Key(4.0, "gray-level standard deviation (0-255) below this: blank or nearly constant",
                            **NOT_NEGATIVE),
        "max_colour": Key(12.0, "mean spread between colour channels (0-255) above this: a colour image",
                          **NOT_NEGATIVE),
        "drift_window": Key(200, "the service's drift alarm looks at the last this many scans", **POSITIVE),
        "drift_share": Key(0.25, "and warns (log and STATUS) when more than this share of them abstained",
                           **SHARE),
        "drift_min_scans": Key(50, "but not before it has seen this many", **NOT_NEGATIVE),
    },
    "registry": {
        "keep": Key(10, "versions kept, newest first; the current and the previous one are always kept too",
                    **NOT_NEGATIVE),
        "lock": Key("train.lock", "lock file (relative to paths.models) that keeps two `tumord train` runs apart"),
        "gate": {
            "min_accuracy": Key(0.8, "at least this accuracy (above 1: never promote on its own)", **NOT_NEGATIVE),
            "min_sensitivity": Key(0.8, "at least this sensitivity (tumors found)", **NOT_NEGATIVE),
            "max_drop": Key(0.02, "largest allowed drop in accuracy or sensitivity against the current model", **SHARE),
            "min_images": Key(20, "fewest held-out images the current model never trained on; below it the\n"
                                  "whole test split is used, which can only favour the current model", **POSITIVE),
        },
    },
    "watch": {
        "recursive": Key(False, "also watch subfolders of paths.input"),
        "observer": Key("native", "native (inotify) or polling (network file systems, where inotify sees nothing)",
                        choices=("native", "polling")),
        "poll_seconds": Key(1.0, "polling observer: seconds between scans of the folder", **POSITIVE),
        "settle_seconds": Key(0.1, "quiet time after a file is closed after writing, before it is read (a file\n"
                                             "renamed into the folder is complete: read at once)",
                              **POSITIVE),
        "stable_seconds": Key(2.0, "quiet time for files seen otherwise (created, rescanned, polled): slow writers",
                              **POSITIVE),
        "rescan_seconds": Key(30.0, "full rescan of the input folder, for events the observer lost", **POSITIVE),
        "batch_size": Key(64, "most scans classified together; a lone scan is not kept waiting", **POSITIVE),
        "decode_threads": Key(2, "threads reading and decoding images", **POSITIVE),
        "predict_threads": Key(2, "threads predicting a batch's chunks of scans in parallel, each with one BLAS\n"
                                  "thread (docs/benchmarks.md)", **POSITIVE),
        "judge_process": Key(True, "decode and predict in a process of its own: the service's bookkeeping does\n"
                                   "not hold up the prediction threads (Python's GIL), and a decoder that\n"
                                   "crashes on a file takes down that process, not the service"),
        "blas_threads": Key(1, "threads of each matrix product (0: the BLAS library's default, one per\n"
                               "core). Threads inside one small product wait on each other whenever\n"
                               "another thread takes a core; parallel chunks do not", **NOT_NEGATIVE,
                            expect="0 (the BLAS library's default) or a positive number of threads"),
        "max_pixels": Key(25_000_000, "larger images are refused from their header, before decoding", **POSITIVE),
        "max_bytes": Key(268_435_456, "larger files are refused unread (256 MiB)", **POSITIVE),
        "on_success": Key("archive", "archive or delete a scan once its verdict is durable",
                          choices=("archive", "delete")),
        "archive": Key("archive", "folder for classified scans (relative: inside paths.output)"),
        "failed": Key("failed", "folder for unusable files and their .error.json (relative: inside paths.output)"),
        "model_poll_seconds": Key(1.0, "how often models/current.json is checked for a newly promoted model",
                                  **POSITIVE),
        "stall_seconds": Key(60.0, "a worker silent this long counts as hung: systemd watchdog pings stop",
                             **POSITIVE),
        "drain_seconds": Key(8.0, "SIGTERM/SIGINT: longest wait for scans in flight before exiting", **POSITIVE),
        "explain": Key(False, "also write <verdict>.png beside each verdict: a heat map of what drove it"),
        "temporary_names": Key([".*", "~$*", "*.part", "*.partial", "*.filepart", "*.tmp", "*.temp", "*.crdownload",
                                "*.download", "*.swp", "*~"],
                               "names of files still being written or uploaded (fnmatch patterns, any case):\n"
                               "never judged, waited for until renamed (WinSCP .filepart, browsers'\n"
                               ".crdownload and .download, Office ~$ files)"),
        "retry_seconds": Key(3600.0, "a scan that cannot be read yet (permission denied) is retried with\n"
                                     "back-off this long, then failed with what to do", **POSITIVE),
    },
    "dicom": {
        "series_stable_seconds": Key(60.0, "a series is complete when none of its instances arrived for this long\n"
                                           "(mercure's and Orthanc's default is 60 s)", **POSITIVE),
        "series_rule": Key("top_k_mean", "top_k_mean: a series' tumor probability is the mean of its series_top_k\n"
                                         "highest slices'; max: its highest slice's (more false alarms on long\n"
                                         "series: docs/dicom.md, \"Combining slices\")", choices=("max", "top_k_mean")),
        "series_top_k": Key(3, "slices averaged by top_k_mean", **POSITIVE),
        "write_results": Key(False, "also write a DICOM Comprehensive 3D SR per series (and, with watch.explain,\n"
                                    "a secondary capture of the heat map) to output/dicom/; needs\n"
                                    "watch.on_success: archive"),
    },
    "http": {
        "enabled": Key(False, "needs the http extra: pip install 'tumord[http]'"),
        "bind": Key("127.0.0.1", "an IP address; loopback (127.0.0.1, ::1) is reachable from this host only"),
        "port": Key(8470, "0: any free port (the log line http.listening says which)", at_least=0, at_most=65535,
                    expect="0 (any free port) to 65535"),
        "token_file": Key("", "file holding the token clients send (Authorization: Bearer); required for\n"
                              "any bind but loopback, compared in constant time"),
    },
}


def defaults(table: dict = TABLE) -> dict:
    """The table's defaults as a nested dict of settings (fresh copies: callers may change them)."""
    return {k: defaults(v) if isinstance(v, dict) else _copy(v.default) for k, v in table.items()}


def _copy(value):
    return list(value) if isinstance(value, list) else value
