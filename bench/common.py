"""Shared by the benchmarks: peak memory, BLAS kernel report, running one engine per process."""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def blas_report() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (pip install -r bench/requirements.txt)"
    rows = [f"{i['internal_api']} {i.get('version')} kernel={i.get('architecture')} threads={i['num_threads']}"
            for i in threadpool_info() if i["user_api"] == "blas"]
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return "; ".join(rows) + (f" (env {env})" if env else " (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset)")


def run_child(script: str, engine: str, *args: str) -> dict:
    """Runs `python script --child ENGINE ARGS` and returns the JSON it prints (one engine per process,
    so that each peak-memory figure is its own)."""
    out = subprocess.run([sys.executable, script, "--child", engine, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values, fmt: str = "{:.2f}") -> str:
    """min-median-max of alternated runs: a ratio from one run on a shared machine says little."""
    v = sorted(values)
    return "-".join(fmt.format(x) for x in (v[0], statistics.median(v), v[-1]))


def torch_report(torch) -> str:
    return (f"torch {torch.__version__} threads={torch.get_num_threads()} "
            f"mkldnn={torch.backends.mkldnn.is_available()}")


def add_model_and_data_options(ap, repo) -> None:
    """--model (default: the current model in models/) and --data (default: the binary set)."""
    from pathlib import Path

    ap.add_argument("--model", type=Path, default=None, help="model file (default: the current model in models/)")
    ap.add_argument("--data", type=Path, default=repo.parent / "shared" / "datasets" / "brain-tumor")
