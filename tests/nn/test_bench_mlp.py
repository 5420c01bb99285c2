"""bench/bench_mlp.py prints each figure as min-median-max over alternated runs, with the kernel.

A tiny run (16x16 images, 64 per epoch): it checks what the benchmark reports, never a timing.
PyTorch is optional; without it the numpy rows are still printed.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_mlp.py"
SPREAD = r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)"


def test_bench_mlp_reports_min_median_max_and_the_blas_kernel():
    proc = subprocess.run([sys.executable, str(BENCH), "--images", "64", "--size", "16", "--rounds", "2",
                           "--threads", "1", "--cpu-time"], capture_output=True, text=True, check=True, timeout=300)
    out = proc.stdout
    assert "2 alternated runs" in out
    assert re.search(r"numpy BLAS: .*kernel=\S+ threads=1", out), out
    row = next(line for line in out.splitlines() if line.startswith("numpy   "))  # the table row
    spreads = re.findall(SPREAD, row)
    assert len(spreads) == 4, row  # s/epoch, img/s at batch 1 and 64, peak MB
    for low, median, high in spreads:
        assert float(low) <= float(median) <= float(high)
    if importlib.util.find_spec("torch") is None:  # CI has no PyTorch: it says so and prints no ratio
        assert "PyTorch not measured" in proc.stderr and "numpy/torch" not in out, proc.stderr
    else:
        assert re.search(rf"numpy/torch time per epoch: {SPREAD}", out), out
