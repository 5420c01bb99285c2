"""Augmentation for unseen domains: what another scanner or export does to a scan.

Gamma (a different window curve), blur or sharpening (another resolution or reconstruction
kernel), noise (another field strength or averaging) and a smooth multiplicative bias field (coil
inhomogeneity). Each strength 0 turns its step off. Applied to uint8 batches after the geometric
augmentation; random numbers come from the given generator, so a seed fixes the result.
"""
from __future__ import annotations

import cv2
import numpy as np


def _bias_field(h: int, w: int, coeffs: np.ndarray) -> np.ndarray:
    """exp of a 2nd-order polynomial in x, y over [-1, 1]: a smooth gain between about e^-s and e^s."""
    y, x = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    terms = np.stack([x, y, x * y, x * x - 1 / 3, y * y - 1 / 3])
    return np.exp(np.tensordot(coeffs, terms, axes=1)).astype(np.float32)


def domain_augment(images: np.ndarray, rng: np.random.Generator, *, gamma: float = 0.0, blur: float = 0.0,
                   noise: float = 0.0, bias_field: float = 0.0) -> np.ndarray:
    """gamma: exponent e^u, u uniform in +-gamma; blur: Gaussian sigma up to `blur` pixels, or (half
    the time) unsharp masking of that sigma; noise: Gaussian noise with std up to noise * 255;
    bias_field: polynomial coefficients uniform in +-bias_field / 2."""
    images = np.asarray(images)
    n, h, w = images.shape
    gammas = np.exp(rng.uniform(-gamma, gamma, n))
    sigmas = rng.uniform(0.3, max(blur, 0.3), n)
    sharpen = rng.random(n) < 0.5
    noise_std = rng.uniform(0, noise * 255, n)
    coeffs = rng.uniform(-bias_field / 2, bias_field / 2, (n, 5))
    levels = np.arange(256) / 255.0
    out = np.empty_like(images)
    for i in range(n):
        img = images[i].astype(np.float32)
        if gamma:
            img = cv2.LUT(np.ascontiguousarray(images[i]), np.clip(np.rint(255 * levels ** gammas[i]), 0, 255)
                          .astype(np.uint8)).astype(np.float32)
        if blur:
            soft = cv2.GaussianBlur(img, (0, 0), float(sigmas[i]))
            img = 2 * img - soft if sharpen[i] else soft
        if bias_field:
            img *= _bias_field(h, w, coeffs[i])
        if noise:
            img += rng.standard_normal((h, w), dtype=np.float32) * noise_std[i]
        out[i] = np.clip(np.rint(img), 0, 255)
    return out
