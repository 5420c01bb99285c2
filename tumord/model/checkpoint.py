"""The model file: weights in an .npz read with allow_pickle=False, metadata as JSON inside it.

Loading never runs code. The metadata carries everything needed to rebuild and trust the model:
architecture, class names, preprocessing, calibration temperature, training summary, metrics,
creation time, tumord version, and a SHA-256 of the weights that is checked on every load.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from concurrent.futures import Executor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tumord import __version__
from tumord.nn.feature_distance import PREFIX as REFERENCE_PREFIX
from tumord.nn.feature_distance import Reference
from tumord.atomic import write_atomic
from tumord.data.images import Preprocess
from tumord.model.predict import chunk_size, predict_logits
from tumord.nn.losses import softmax
from tumord.nn.network import Network

FORMAT = "tumord-model"
FORMAT_VERSION = 1
META_KEY = "__metadata__"


class CheckpointError(ValueError):
    """A model file that cannot be used; the message names the file and what is wrong."""


def weights_sha256(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        a = np.ascontiguousarray(state[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Classifier:
    """A network with its metadata: what the CLI, evaluation and the service call."""

    def __init__(self, net: Network, meta: dict, path: Path | None = None, reference: Reference | None = None):
        self.net, self.meta, self.path = net, meta, path
        self.reference = reference  # training features' statistics for abstention; None in older files
        self.class_names: list[str] = list(meta["class_names"])
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.temperature = float(meta.get("temperature", 1.0))
        self.batch_size = chunk_size(meta["architecture"]["layers"])

    @property
    def identity(self) -> dict:
        return {"version": self.meta["version"], "sha256": self.meta["weights_sha256"]}

    def logits(self, images: np.ndarray, batch_size: int | None = None, pool: Executor | None = None) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return predict_logits(self.net, images, batch_size=batch_size or self.batch_size, pool=pool)

    def predict(self, images: np.ndarray, batch_size: int | None = None, pool: Executor | None = None) -> np.ndarray:
        """uint8 (N, size, size) -> calibrated class probabilities (N, classes); a thread pool
        predicts its chunks in parallel."""
        return softmax(self.logits(images, batch_size, pool) / self.temperature)


def new_metadata(net: Network, class_names, preprocess: Preprocess, **extra) -> dict:
    created = datetime.now(timezone.utc)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tumord_version": __version__,
        "created_at": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "architecture": {"input_shape": list(net.input_shape), "layers": net.spec},
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        "temperature": 1.0,
    }
    meta.update(extra)
    return meta


def save(path: str | Path, net: Network, meta: dict, reference: Reference | None = None) -> dict:
    """Writes the model atomically; fills in weights_sha256 and version; returns the metadata.

    With a reference, its arrays go in beside the weights and their own hash in meta["abstain"]."""
    state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in net.state_dict().items()}
    meta = dict(meta)
    meta["weights_sha256"] = weights_sha256(state)
    if reference is not None:
        extra = {k: np.ascontiguousarray(v) for k, v in reference.to_arrays().items()}
        meta["abstain"] = {**reference.describe(), "sha256": weights_sha256(extra)}
        state.update(extra)
    stamp = meta["created_at"].replace("-", "").replace(":", "")
    meta["version"] = f"{stamp}-{meta['weights_sha256'][:8]}"
    buf = io.BytesIO()
    np.savez(buf, **state, **{META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    write_atomic(path, buf.getvalue())
    return meta


def _fail(path, what: str):
    raise CheckpointError(f"{path}: {what}")


def load(path: str | Path) -> Classifier:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        _fail(path, "no such model file")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        _fail(path, f"not a readable tumord model (.npz) file: {e}")
    if META_KEY not in arrays:
        _fail(path, "has no tumord metadata; it is not a tumord model file")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(path, f"metadata is not valid JSON ({e})")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        _fail(path, f"format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                    f"expected {FORMAT!r} version {FORMAT_VERSION}")
    for key in ("architecture", "class_names", "preprocess", "weights_sha256", "version"):
        if key not in meta:
            _fail(path, f"metadata lacks {key!r}")
    extra = {k: arrays.pop(k) for k in [k for k in arrays if k.startswith(REFERENCE_PREFIX)]}
    if weights_sha256(arrays) != meta["weights_sha256"]:
        _fail(path, "weights do not match their recorded SHA-256 (the file is corrupt or was altered)")
    reference = _reference(path, meta, extra)
    try:
        arch = meta["architecture"]
        net = Network(tuple(arch["input_shape"]), arch["layers"])
        net.load_state_dict(arrays)
    except (ValueError, KeyError, TypeError) as e:
        _fail(path, f"weights do not fit the recorded architecture: {e}")
    if net.output_shape != (len(meta["class_names"]),):
        _fail(path, f"network gives {net.output_shape} outputs for {len(meta['class_names'])} class names")
    try:
        return Classifier(net, meta, path, reference)
    except (ValueError, TypeError) as e:
        _fail(path, f"preprocessing: {e}")


def _reference(path, meta: dict, extra: dict[str, np.ndarray]) -> Reference | None:
    """The abstention reference, checked against its own hash; None for files made before it existed."""
    info = meta.get("abstain")
    if info is None and not extra:
        return None
    if info is None or weights_sha256(extra) != info.get("sha256"):
        _fail(path, "abstention reference arrays do not match their recorded SHA-256 (corrupt or altered)")
    try:
        return Reference.from_arrays(extra, info)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        _fail(path, f"abstention reference is unusable: {e}")
