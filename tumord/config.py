"""Configuration: defaults for every command, read from config.yaml and validated strictly.

An unknown key, a wrong type or a bad value is a ConfigError that names the file and the key;
commands turn it into one line on stderr and exit code 2.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# Every setting with its default. Types are taken from the defaults (an int is accepted where
# a float is expected). config.yaml documents each one; a test keeps the two in step.
DEFAULTS: dict[str, dict[str, Any]] = {
    "paths": {
        "input": "input",
        "output": "output",
        "models": "models",
        "cache": ".cache/tumord",
    },
    "preprocess": {"size": 128},
    "model": {
        "architecture": "cnn",
        "hidden": 512,
        "dropout": 0.2,
        "batchnorm": True,
        "channels": [16, 32, 64, 128, 256],
    },
    "train": {
        "seed": 0,
        "split_seed": 0,
        "epochs": 40,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 0.003,
        "momentum": 0.9,
        "weight_decay": 0.05,
        "schedule": "one_cycle",
        "lr_decay": 0.95,
        "warmup_epochs": 1,
        "patience": 40,
        "label_smoothing": 0.05,
        "mixup": 0.2,
        "precise_bn_batches": 20,
        "extra_data": [],
        "extra_classes": [],
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "dedup_similarity": 0.95,
        "negative_class": "normal",
        "augment": {
            "enabled": True,
            "flip": True,
            "rotate_deg": 10.0,
            "scale": 0.1,
            "shift": 0.08,
            "brightness": 0.1,
            "contrast": 0.1,
        },
    },
    "watch": {
        "recursive": False,
        "observer": "native",  # native (inotify) or polling (network filesystems)
        "poll_seconds": 1.0,  # polling observer interval
        "settle_seconds": 0.1,  # quiet time after a close-after-write or a move into the folder
        "stable_seconds": 2.0,  # quiet time for files seen without a close event (rescans, polling)
        "rescan_seconds": 30.0,  # periodic full rescan for events the observer lost
        "batch_size": 64,  # most scans classified together; a lone scan is not kept waiting
        "decode_threads": 2,
        "predict_threads": 2,  # threads predicting a batch's chunks in parallel (one BLAS thread each)
        "blas_threads": 1,  # threads of the network's matrix products; 0: the BLAS library's default
        "max_pixels": 25_000_000,  # checked in the image header, before decoding
        "max_bytes": 268_435_456,
        "on_success": "archive",  # archive or delete the scan once its verdict is durable
        "archive": "archive",  # relative folders are inside paths.output
        "failed": "failed",
        "model_poll_seconds": 1.0,  # how often models/current.json is checked for a new model
        "stall_seconds": 60.0,  # a worker silent this long is hung: systemd watchdog pings stop
        "drain_seconds": 8.0,  # SIGTERM: longest wait for in-flight scans before exiting
        "explain": False,
    },
    "http": {  # tumord watch's HTTP server (docs/http.md)
        "enabled": False,
        "bind": "127.0.0.1",  # an IP address; any but loopback needs token_file
        "port": 8470,  # 0: any free port (the log says which)
        "token_file": "",  # a file holding the token that clients must send
    },
    "registry": {
        "keep": 10,  # versions kept, newest first; the current and the previous are always kept too
        "lock": "train.lock",  # relative to paths.models
        "gate": {
            "min_accuracy": 0.8,
            "min_sensitivity": 0.8,
            "max_drop": 0.02,  # largest allowed drop in accuracy or sensitivity against the current model
            "min_images": 20,  # fewest held-out images unseen by the current model for a fair comparison
        },
    },
}

CHOICES = {
    "model.architecture": ("mlp", "cnn"),
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("step", "warmup_cosine", "one_cycle"),
    "watch.observer": ("native", "polling"),
    "watch.on_success": ("archive", "delete"),
}

NOT_NEGATIVE = {
    "train.mixup": "0 (off) or a positive Beta parameter, e.g. 0.2",
    "watch.blas_threads": "0 (the BLAS library's default) or a positive number of threads",
}


class ConfigError(ValueError):
    pass


def _check(value: Any, default: Any, key: str, source: str) -> Any:
    def fail(expected: str):
        raise ConfigError(f"{source}: {key} = {value!r} is not valid; expected {expected}")

    if isinstance(default, dict):
        if not isinstance(value, dict):
            fail("a mapping of settings")
        unknown = sorted(set(value) - set(default))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key {key + '.' if key else ''}{unknown[0]}; "
                f"expected one of {', '.join(sorted(default))}"
            )
        merged = copy.deepcopy(default)
        for k, v in value.items():
            merged[k] = _check(v, default[k], f"{key}.{k}" if key else k, source)
        return merged
    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            fail("a whole number")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            fail("a string")
    elif isinstance(default, list):
        item = type(default[0]) if default else str
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            fail(f"a list of {item.__name__}")
    if key in CHOICES and value not in CHOICES[key]:
        fail("one of " + ", ".join(CHOICES[key]))
    if key in NOT_NEGATIVE and value < 0:
        fail(NOT_NEGATIVE[key])
    return value


def validate(raw: dict | None, source: str = "config") -> dict:
    return _check(raw or {}, DEFAULTS, "", source)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Reads and validates a YAML file (defaults alone when path is None), then KEY=VALUE overrides."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the configuration file ({e.strerror})") from e
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=10")
        node = raw
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is not a section")
        node[leaf] = yaml.safe_load(text)
    return validate(raw, source if not overrides else f"{source} with --set")

