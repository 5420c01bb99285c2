"""Heat-map PNGs that show which region of a scan drove its verdict."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tumord.atomic import write_atomic
from tumord.model.checkpoint import Classifier
from tumord.model.predict import to_input
from tumord.nn.saliency import input_gradient


def heatmap(model: Classifier, image: np.ndarray, label: int) -> np.ndarray:
    """Saliency of class `label` for one uint8 (size, size) image, scaled to [0, 1]."""
    x = to_input(image[None], model.net.input_shape)
    grad = input_gradient(model.net, x, np.array([label])).reshape(image.shape)
    sal = cv2.GaussianBlur(np.abs(grad).astype(np.float32), (0, 0), max(1.0, image.shape[0] / 64))
    top = np.percentile(sal, 99.5)  # a few extreme pixels should not wash out the rest
    return np.clip(sal / top, 0, 1) if top > 0 else sal


def render(image: np.ndarray, sal: np.ndarray, label: str, confidence: float) -> bytes:
    """The scan with the heat map laid over it, and the verdict written on it, as PNG bytes."""
    side = max(256, image.shape[0])
    gray = cv2.cvtColor(cv2.resize(image, (side, side)), cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap((cv2.resize(sal, (side, side)) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = cv2.resize(sal, (side, side))[..., None] * 0.6
    out = (gray * (1 - alpha) + heat * alpha).astype(np.uint8)
    cv2.putText(out, f"{label} {confidence:.2f}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    ok, png = cv2.imencode(".png", np.hstack([gray, out]))
    return png.tobytes()


def explanation_png(model: Classifier, image: np.ndarray) -> bytes:
    probs = model.predict(image[None])[0]
    label = int(probs.argmax())
    return render(image, heatmap(model, image, label), model.class_names[label], float(probs[label]))


def write_explanation(model: Classifier, image: np.ndarray, path: str | Path) -> Path:
    return write_atomic(path, explanation_png(model, image))
