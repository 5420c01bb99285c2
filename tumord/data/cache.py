"""Decoded images cached on disk as uint8 at model resolution, reused while files are unchanged.

One cache per preprocessing setting: images.npy (N, size, size) uint8, thumbs.npy (N, 32, 32)
uint8 for near-duplicate grouping, and index.json with each file's path, size and mtime. A
later run decodes only new or changed files. Images are memory-mapped, never held as float.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tumord.atomic import write_atomic
from tumord.data.images import Preprocess, decode_gray, resize
from tumord.logs import get_logger

THUMB = 32
log = get_logger("tumord.cache")


def _stamp(p: Path) -> list:
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def _decode(path: Path, pre: Preprocess):
    gray = decode_gray(path.read_bytes(), path)
    thumb = resize(gray, Preprocess(size=THUMB, interpolation="area"))
    return resize(gray, pre), thumb


def load_images(files: list[Path], pre: Preprocess, cache_dir: str | Path | None,
                workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images (N,size,size), thumbs (N,32,32)) uint8 for the files, in order.

    Unreadable files raise ImageError naming the file: a training set must be clean.
    """
    stamps = [_stamp(p) for p in files]
    old: dict = {}
    folder = None
    if cache_dir is not None:
        # one cache per preprocessing and data folder, so evaluating another folder keeps this one
        root = os.path.commonpath([s[0] for s in stamps]) if stamps else ""
        key = hashlib.sha256(json.dumps([pre.to_dict(), root], sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(cache_dir) / f"{pre.size}px-{key}"
        try:
            index = json.loads((folder / "index.json").read_text())
            imgs = np.load(folder / "images.npy", mmap_mode="r")
            thumbs = np.load(folder / "thumbs.npy", mmap_mode="r")
            if len(index) == len(imgs) == len(thumbs):
                if index == stamps:  # nothing changed: serve the memory maps, copy nothing
                    return imgs, thumbs
                old = {tuple(s): i for i, s in enumerate(index)}
        except (OSError, ValueError):
            old = {}
    n = len(files)
    images = np.empty((n, pre.size, pre.size), np.uint8)
    out_thumbs = np.empty((n, THUMB, THUMB), np.uint8)
    todo = []
    for i, s in enumerate(stamps):
        j = old.get(tuple(s))
        if j is None:
            todo.append(i)
        else:
            images[i], out_thumbs[i] = imgs[j], thumbs[j]
    if todo:
        log.info("decoding images", count=len(todo), cached=n - len(todo), size=pre.size)
        with ThreadPoolExecutor(workers) as pool:  # cv2 releases the GIL while decoding
            for i, (img, th) in zip(todo, pool.map(lambda i: _decode(files[i], pre), todo)):
                images[i], out_thumbs[i] = img, th
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "index.json").unlink(missing_ok=True)  # no index: a half-rewritten cache is not trusted
            write_atomic(folder / "images.npy", lambda f: np.save(f, images))
            write_atomic(folder / "thumbs.npy", lambda f: np.save(f, out_thumbs))
            write_atomic(folder / "index.json", json.dumps(stamps))
    return images, out_thumbs

