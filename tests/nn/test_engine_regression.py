"""The engine computes what it computed before the speed work of issue 18.

tests/nn/engine_reference.npz holds a small fixed network's weights, an input batch, and what the
engine at commit 94d6c2d (before any of issue 18's changes) computed from them: inference logits,
training-mode logits, every parameter gradient of one backward pass, and the logits after three
AdamW steps. Every later engine change must reproduce them within float32 tolerance.
Regenerate only on purpose, naming the commit: `python -m tests.nn.test_engine_regression`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tumord.nn import parallel
from tumord.nn.conv import cnn_spec
from tumord.nn.losses import softmax_cross_entropy
from tumord.nn.network import Network
from tumord.nn.optim import AdamW

FIXTURE = Path(__file__).with_name("engine_reference.npz")
SPEC = cnn_spec(channels=(4, 8, 16, 32), classes=3, dropout=0.0)
INPUT_SHAPE = (1, 32, 32)


def _network(weights: dict[str, np.ndarray] | None = None) -> Network:
    net = Network(INPUT_SHAPE, SPEC, np.random.default_rng(0))
    if weights is not None:
        net.load_state_dict(weights)
    return net


def _compute(weights: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    net = _network(weights)
    out = {"predict": net.forward(x)}
    logits = net.forward(x, training=True)
    out["train_logits"] = logits
    net.backward(softmax_cross_entropy(logits, labels)[1])
    out.update({f"grad.{name}": grad.copy() for name, _, grad in net.named_parameters()})
    opt = AdamW(1e-2, weight_decay=0.01)
    opt.step(net.named_parameters())
    for _ in range(2):
        net.backward(softmax_cross_entropy(net.forward(x, training=True), labels)[1])
        opt.step(net.named_parameters())
    out["predict_after_steps"] = net.forward(x)
    out.update({f"state.{k}": v for k, v in net.state_dict().items() if k.endswith(("running_mean", "running_var"))})
    return out


def _inputs(ref) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    weights = {k[len("weight."):]: ref[k] for k in ref.files if k.startswith("weight.")}
    return weights, ref["x"], ref["labels"]


@pytest.mark.parametrize("split", [False, True])
def test_engine_reproduces_the_reference_outputs_and_gradients(split, monkeypatch):
    """With products split between threads by images (nn/parallel.py) and without."""
    monkeypatch.setattr(parallel, "SPLIT", split)
    monkeypatch.setattr(parallel, "THREADS", 2)
    ref = np.load(FIXTURE, allow_pickle=False)
    weights, x, labels = _inputs(ref)
    with threadpool_limits(2, user_api="blas"):
        assert parallel.split_parts(len(x)) == (2 if split else 1)
        got = _compute(weights, x, labels)
    expected = {k: ref[k] for k in ref.files if not k.startswith("weight.") and k not in ("x", "labels")}
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        scale = max(float(np.abs(v).max()), 1e-3)
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=2e-5 * scale, err_msg=k)


def _write_fixture() -> None:
    rng = np.random.default_rng(42)
    weights = _network().copy_state()
    for k in weights:  # batch-norm parameters and statistics away from their initial values
        if k.endswith(("gamma", "running_var")):
            weights[k] = rng.uniform(0.5, 1.5, weights[k].shape).astype(np.float32)
            if k.endswith("gamma"):  # a negative scale reverses which value a max pool picks
                weights[k][::3] *= -1
        elif k.endswith(("beta", "running_mean")):
            weights[k] = rng.normal(0, 0.3, weights[k].shape).astype(np.float32)
    x = rng.random((6, *INPUT_SHAPE), dtype=np.float32)
    labels = rng.integers(0, 3, 6)
    out = _compute(weights, x, labels)
    np.savez_compressed(FIXTURE, x=x, labels=labels, **{f"weight.{k}": v for k, v in weights.items()}, **out)


if __name__ == "__main__":
    _write_fixture()
