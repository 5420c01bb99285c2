"""Helpers for the batch tests: generated scans with a few bad files, a tiny model, and one real
LocalCluster of two worker processes shared by the tests of a module (it takes seconds to start)."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.synthetic import scan, tiny_model

pytest.importorskip("distributed", reason="tumord batch needs dask.distributed: pip install -e '.[batch]'")

from distributed import Client, LocalCluster  # noqa: E402

from tumord.batch.run import Settings  # noqa: E402
from tumord.logs import get_logger  # noqa: E402

# five ways a file in an archive is not a usable scan; each fails alone
BAD = {
    "empty.png": b"",
    "truncated.png": None,  # the first 200 bytes of a real PNG, filled in by write_scans
    "notes.png": b"a note saved with the wrong name, not an image\n",
    "animation.png": b"GIF89a" + bytes(64),
    "report.pdf": b"%PDF-1.4\n" + bytes(64),
}


def write_scans(folder: Path, good: int, seed: int = 0, size: int = 64, subfolders: bool = True) -> list[str]:
    """`good` generated PNG scans (in two subfolders) plus the BAD files; returns their relative paths."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(good):
        rel = f"{'ab'[i % 2]}/scan {i:03d}.png" if subfolders else f"scan {i:03d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".png", scan(bool(rng.integers(2)), rng, size))
        (folder / rel).write_bytes(buf.tobytes())
        names.append(rel)
    for name, data in BAD.items():
        (folder / name).write_bytes(data if data is not None else (folder / names[0]).read_bytes()[:200])
        names.append(name)
    return names


def table(folder: Path) -> list[dict]:
    with open(folder / "verdicts.csv", encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def records(folder: Path) -> tuple[list[dict], list[dict]]:
    """(verdicts, error records) committed in a model's output folder."""
    return ([json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))],
            [json.loads(p.read_text()) for p in sorted((folder / "failed").glob("*.error.json"))])


@pytest.fixture(scope="module")
def client():
    # Dask's nanny exports OMP/MKL/OPENBLAS_NUM_THREADS=1 into this process's environment for its
    # workers to inherit; the processes later tests start (a service measuring its BLAS threads) must not
    saved = dict(os.environ)
    try:
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster) as c:
            yield c
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.npz"
    tiny_model(path)
    return path


@pytest.fixture
def settings(tmp_path, model):
    def make(data: Path, **kw) -> Settings:
        return Settings(data=data, output=tmp_path / "out", model=model, **kw)
    return make


@pytest.fixture
def log():
    return get_logger("tumord.batch.test")
