"""Peak memory and task count of `tumord watch`, to size the unit's MemoryMax= and TasksMax=.

Runs the service (default settings, the current model) on temporary folders and drops, in turn:
a burst of real scans, then large TIFFs near the size limits (each decode thread may hold one:
its bytes, the decoded image and its gray copy). Samples the process's VmHWM (peak resident
memory, what a cgroup's memory limit is compared with, page cache aside) and its thread count
(systemd's TasksMax counts threads) every 20 ms.

    python bench/service_peaks.py [--data DIR] [--burst 2000] [--big 6] [--big-side 5000] [--deep]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tumord.data.images import IMAGE_SUFFIXES  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402


def status(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                fields[key] = int(value.split()[0])
    return fields


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "brain-tumor")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--big", type=int, default=6)
    ap.add_argument("--big-side", type=int, default=5000, help="big TIFFs are SIDE x SIDE pixels, uncompressed")
    ap.add_argument("--deep", action="store_true", help="big TIFFs in 16-bit RGBA (8 bytes a pixel) instead of 8-bit RGB")
    args = ap.parse_args()
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        sys.exit(f"service_peaks: no images under {args.data}")
    model = current_model_path(REPO / "models")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("input", "output", "staging"):
            (root / name).mkdir()
        shape, top, kind = ((args.big_side, args.big_side, 4), 65536, np.uint16) if args.deep else \
            ((args.big_side, args.big_side, 3), 256, np.uint8)
        big = np.random.default_rng(0).integers(0, top, shape, dtype=kind)
        for i in range(args.big):
            cv2.imwrite(str(root / "staging" / f"big{i}.tif"), big, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
        big_mb = (root / "staging" / "big0.tif").stat().st_size / 2**20 if args.big else 0
        for i in range(args.burst):
            src = files[i % len(files)]
            (root / "staging" / f"s{i:05d}{src.suffix.lower()}").write_bytes(src.read_bytes())
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "tumord.cli", "watch", "--log-json", "--model", str(model),
                                 "--input", str(root / "input"), "--output", str(root / "output")],
                                cwd=root, env=env, stderr=subprocess.PIPE, text=True)
        classified, failed = [0], [0]

        last = []

        def read():
            for line in proc.stderr:
                last[:] = (last + [line])[-5:]
                classified[0] += '"scan.classified"' in line
                failed[0] += '"scan.failed"' in line

        threading.Thread(target=read, daemon=True).start()
        peaks = {"VmHWM": 0, "Threads": 0}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    s = status(proc.pid)
                except OSError:
                    return
                if "VmHWM" not in s:  # exited: a zombie has no memory
                    return
                peaks["VmHWM"] = max(peaks["VmHWM"], s["VmHWM"])
                peaks["Threads"] = max(peaks["Threads"], s["Threads"])
                time.sleep(0.02)

        threading.Thread(target=sample, daemon=True).start()
        while not any("service.ready" in line for line in last) and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(1.0)
        if proc.poll() is not None:
            sys.exit("service_peaks: the service exited:\n" + "".join(last))
        idle = status(proc.pid)
        phases = {}
        for phase, names in (("burst", sorted(p for p in os.listdir(root / "staging") if p.startswith("s"))),
                             ("big", sorted(p for p in os.listdir(root / "staging") if p.startswith("big")))):
            target = classified[0] + failed[0] + len(names)
            for n in names:
                os.rename(root / "staging" / n, root / "input" / n)
            while classified[0] + failed[0] < target and proc.poll() is None:
                time.sleep(0.1)
            phases[phase] = {"VmHWM_MiB": round(peaks["VmHWM"] / 1024, 1), "threads": peaks["Threads"]}
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        stop.set()
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "burst": args.burst, "big": args.big, "deep": args.deep,
                      "big_file_MiB": round(big_mb, 1), "idle_rss_MiB": round(idle["VmRSS"] / 1024, 1),
                      "idle_threads": idle["Threads"], "peaks_after": phases, "classified": classified[0],
                      "failed": failed[0], "exit": code}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
