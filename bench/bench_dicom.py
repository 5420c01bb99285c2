"""DICOM decode + classify against PNG of the same pixels, and the series-completion latency.

Throughput: N real scans (../shared/datasets/brain-tumor, file-name order) become 16-bit pixels
(the 8-bit gray values times 16: 12-bit, as MR scanners store them), encoded as 16-bit PNG and as
DICOM MR in explicit VR little endian, RLE and JPEG 2000 (lossless). Each encoding is held in
memory and pushed through the service's own per-file step (`tumord.service.classify.prepare`:
header checks, decoding, normalization, resize) in a pool of `watch.decode_threads` threads, then
predicted in batches of `watch.batch_size` by the current model. Encodings alternate within each
round, so a busy neighbour on a shared machine slows all of them alike; min/median/max over rounds.

Latency: `tumord watch` with dicom.series_stable_seconds=S; a series of K slices is dropped into
input/ at once; the figure is from the last file's rename to the `series.classified` log line,
of which S is the quiet window itself.

    python bench/bench_dicom.py [--scans 300] [--rounds 5] [--series 3 --slices 20 --stable 2] [--json]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tumord.config import DEFAULTS  # noqa: E402
from tumord.data.images import decode_gray  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402
from tumord.service.classify import Limits, prepare  # noqa: E402
from tumord.service.records import Ready  # noqa: E402
from tumord.service.service import limit_blas_threads  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from common import blas_report  # noqa: E402

ENCODINGS = ("png", "dicom", "rle", "j2k")


def dicom_bytes(pixels: np.ndarray, encoding: str, series: str, number: int, study: str = "1.2.3") -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
    ds.Modality, ds.ImageType, ds.SeriesDescription = "MR", ["ORIGINAL", "PRIMARY", "AXIAL"], "bench"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    if encoding != "dicom":
        ds.compress({"rle": RLELossless, "j2k": JPEG2000Lossless}[encoding])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def encode_all(grays: list[np.ndarray]) -> dict[str, list[bytes]]:
    from pydicom.uid import generate_uid

    series = generate_uid()
    out = {e: [] for e in ENCODINGS}
    for k, g in enumerate(grays):
        px = g.astype(np.uint16) * 16
        out["png"].append(cv2.imencode(".png", px)[1].tobytes())
        for e in ENCODINGS[1:]:
            out[e].append(dicom_bytes(px, e, series, k + 1))
    return out


def classify_rate(files: list[bytes], model, pool, folder: Path, suffix: str, batch: int) -> tuple[float, float]:
    """Scans per second through prepare() (from files in a folder) alone, and with batched prediction."""
    limits = Limits(DEFAULTS["watch"]["max_pixels"], DEFAULTS["watch"]["max_bytes"])
    paths = []
    for k, data in enumerate(files):
        p = folder / f"{k:05d}{suffix}"
        p.write_bytes(data)
        paths.append(str(p))
    for p in paths:  # page cache warm for every encoding alike
        Path(p).read_bytes()
    start = time.perf_counter()
    scans = list(pool.map(lambda p: prepare(Ready(p, "", 0.0), str(folder), model, limits), paths))
    decoded = time.perf_counter() - start
    images = np.stack([s.image.reshape(-1, *s.image.shape[-2:])[0] for s in scans])
    for i in range(0, len(images), batch):
        model.predict(images[i : i + batch])
    elapsed = time.perf_counter() - start
    for p in paths:
        os.unlink(p)
    assert all(s.error is None for s in scans), [s.error for s in scans if s.error][:3]
    return len(files) / decoded, len(files) / elapsed


def series_latency(model_path: Path, slices: list[bytes], stable: float, runs: int) -> list[float]:
    """Seconds from the last slice's arrival to the series verdict, per run (each a new series)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "input").mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "tumord.cli", "watch", "--log-json", "--input",
                                 str(root / "input"), "--output", str(root / "output"), "--model", str(model_path),
                                 "--set", f"dicom.series_stable_seconds={stable}"],
                                cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
                                text=True)
        try:
            line = ""
            while '"service.ready"' not in line:
                line = proc.stderr.readline()
                assert line, "the service ended before it was ready"
            for r in range(runs):
                from pydicom import dcmread
                from pydicom.uid import generate_uid

                uid = generate_uid()
                staged = root / "staging"
                staged.mkdir(exist_ok=True)
                for k, data in enumerate(slices):
                    ds = dcmread(io.BytesIO(data))
                    ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.save_as(staged / f"r{r}s{k}.dcm", enforce_file_format=True)
                for k in range(len(slices)):
                    os.replace(staged / f"r{r}s{k}.dcm", root / "input" / f"r{r}s{k}.dcm")
                arrived = time.monotonic()
                while True:
                    line = proc.stderr.readline()
                    assert line, "the service ended"
                    if '"series.classified"' in line and uid in line:
                        out.append(time.monotonic() - arrived)
                        break
        finally:
            proc.terminate()
            proc.wait(30)
    return out


def spread(values: list[float], digits: int = 1) -> str:
    return "/".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "brain-tumor")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--scans", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--series", type=int, default=3, help="series-completion latency runs")
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--stable", type=float, default=2.0, help="dicom.series_stable_seconds for the latency runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    w = DEFAULTS["watch"]
    blas = limit_blas_threads(w["blas_threads"])
    model_path = args.model or current_model_path(REPO / "models")
    model = checkpoint.load(model_path)
    files = sorted(p for p in (args.data / "normal").iterdir() if p.suffix.lower() in (".jpg", ".png"))[: args.scans]
    grays = [decode_gray(p.read_bytes(), p) for p in files]
    encoded = encode_all(grays)
    rates = {e: [] for e in ENCODINGS}
    decode = {e: [] for e in ENCODINGS}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(w["decode_threads"]) as pool:
        for _ in range(args.rounds):
            for e in ENCODINGS:
                d, r = classify_rate(encoded[e], model, pool, Path(tmp), ".png" if e == "png" else ".dcm",
                                     w["batch_size"])
                decode[e].append(d)
                rates[e].append(r)
    latency = series_latency(model_path, encoded["dicom"][: args.slices], args.stable, args.series) \
        if args.series else []
    result = {
        "date": str(date.today()), "scans": len(files), "rounds": args.rounds,
        "mean_pixels": int(np.mean([g.size for g in grays])), "model": model.identity["version"],
        "blas": blas_report(), "blas_threads": blas, "decode_threads": w["decode_threads"],
        "scans_per_second": rates, "decode_scans_per_second": decode,
        "ratio_png_over_dicom": [p / d for p, d in zip(rates["png"], rates["dicom"])],
        "decode_ratio_png_over_dicom": [p / d for p, d in zip(decode["png"], decode["dicom"])],
        "bytes_mean": {e: int(np.mean([len(b) for b in encoded[e]])) for e in ENCODINGS},
        "series_latency_s": latency, "series_stable_seconds": args.stable, "series_slices": args.slices,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['date']}: {len(files)} scans (mean {result['mean_pixels']} pixels), {args.rounds} alternated "
          f"rounds, model {result['model']}; {result['blas']}; decode threads {w['decode_threads']}")
    for e in ENCODINGS:
        print(f"  {e:6s} decode+classify {spread(rates[e])} scans/s (min/median/max), decode alone "
              f"{spread(decode[e])}, {result['bytes_mean'][e]} bytes per file")
    print(f"  PNG/DICOM-uncompressed throughput ratio per round: decode+classify "
          f"{spread(result['ratio_png_over_dicom'], 2)}, decode alone {spread(result['decode_ratio_png_over_dicom'], 2)}")
    if latency:
        print(f"  series of {args.slices} slices, quiet window {args.stable}s: verdict {spread(latency, 2)} s after "
              f"the last slice arrived")
    return 0


if __name__ == "__main__":
    sys.exit(main())
