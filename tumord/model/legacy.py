"""Converting the original design's pickled weights without running code from the file.

The original saved a pickled dict of numpy arrays. pickle can call any importable function, so
the file is read with an unpickler that admits only what numpy arrays and scalars need to be
rebuilt; any other reference (os.system, builtins.eval, ...) is refused before it is called.
"""
from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np

from tumord.data.images import Preprocess
from tumord.model import checkpoint
from tumord.nn.network import Network, mlp_spec

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # protocol 2 stores bytes as encode(str, 'latin1')
}


class LegacyModelError(checkpoint.CheckpointError):
    pass


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None and module.startswith("numpy") and name.endswith("DType"):  # numpy 2 dtype classes
            target = ("numpy.dtypes", name)
        if target is None:
            raise LegacyModelError(
                f"{self.path}: refused: the pickle references {module}.{name}, which could run code; "
                "only numpy arrays and scalars are allowed in a model file")
        mod = __import__(target[0], fromlist=[target[1]])
        return getattr(mod, target[1])

    def persistent_load(self, pid):
        raise LegacyModelError(f"{self.path}: refused: the pickle uses persistent references")


def read_legacy(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LegacyModelError(f"{path}: cannot be read ({e.strerror})") from e
    try:
        obj = _ArraysOnly(io.BytesIO(data), path).load()
    except LegacyModelError:
        raise
    except Exception as e:  # truncated or garbled pickles fail in many ways
        raise LegacyModelError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise LegacyModelError(f"{path}: holds a {type(obj).__name__}; expected a dict of weight arrays")
    return obj


def _pick(arrays: dict, path, *prefixes: str, required: bool = True):
    keys = [k for k in arrays if isinstance(k, str) and k.startswith(prefixes)]
    if not keys:
        if required:
            raise LegacyModelError(f"{path}: lacks a {' or '.join(p + '*' for p in prefixes)} entry")
        return None
    return np.asarray(arrays[sorted(keys)[0]], np.float32).reshape(-1)


def convert(old_path: str | Path, new_path: str | Path, class_names=("normal", "tumor"),
            calibration_images: np.ndarray | None = None) -> dict:
    """Writes the legacy weights as a tumord model; returns its metadata.

    The original kept no running batch-norm statistics (it normalized with each batch's own),
    so they are estimated from calibration_images when given, else left at mean 0 / variance 1
    and the metadata says so.
    """
    arrays = read_legacy(old_path)
    try:
        w1 = np.asarray(arrays["weights_input_hidden"], np.float32)
        w2 = np.asarray(arrays["weights_hidden_output"], np.float32)
    except KeyError as e:
        raise LegacyModelError(f"{old_path}: lacks {e.args[0]!r}; not an original tumord model") from None
    n_in, hidden = w1.shape
    classes = w2.shape[1]
    side = math.isqrt(n_in)
    if side * side != n_in or w2.shape[0] != hidden:
        raise LegacyModelError(f"{old_path}: weight shapes {w1.shape} and {w2.shape} do not form a square-input MLP")
    if len(class_names) != classes:
        raise LegacyModelError(f"{old_path}: has {classes} outputs; {len(class_names)} class names were given")
    has_gamma = "gamma_hidden" in arrays or any(str(k).startswith("gamma") for k in arrays)
    use_bn = bool(arrays.get("use_batch_norm", has_gamma))
    net = Network((1, side, side), mlp_spec(hidden, classes, 0.2, batchnorm=use_bn))
    state = net.state_dict()
    state["1.W"][...] = w1
    state["1.b"][...] = _pick(arrays, old_path, "bias_hidden")
    out = "5" if use_bn else "4"
    state[f"{out}.W"][...] = w2
    state[f"{out}.b"][...] = _pick(arrays, old_path, "bias_output")
    bn_stats = "none"
    if use_bn:
        state["2.gamma"][...] = _pick(arrays, old_path, "gamma")
        state["2.beta"][...] = _pick(arrays, old_path, "beta")
        mean, var = _pick(arrays, old_path, "running_mean", "moving_mean", required=False), \
            _pick(arrays, old_path, "running_var", "moving_var", required=False)
        if mean is not None and var is not None:
            state["2.running_mean"][...], state["2.running_var"][...] = mean, var
            bn_stats = "from file"
        elif calibration_images is not None:
            x = calibration_images.reshape(len(calibration_images), -1).astype(np.float32) / 255.0
            h = x @ w1 + state["1.b"]
            state["2.running_mean"][...], state["2.running_var"][...] = h.mean(0), h.var(0)
            bn_stats = f"estimated from {len(x)} images"
        else:
            bn_stats = "unknown (mean 0, variance 1): pass --data to estimate them"
    meta = checkpoint.new_metadata(net, class_names, Preprocess(size=side),
                                   training={"imported_from": str(old_path), "batchnorm_statistics": bn_stats})
    return checkpoint.save(new_path, net, meta)
