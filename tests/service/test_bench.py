"""bench/bench_service.py runs end to end (on a tiny model and generated scans) and reports its figures."""
import json
import os
import subprocess
import sys

from tests.service.conftest import REPO
from tests.synthetic import tiny_model, write_dataset


def test_benchmark_reports_every_figure(tmp_path):
    """The benchmark prints throughput, latencies, the decode-only rate, the plain loop's rate and peak RSS."""
    tiny_model(tmp_path / "model.npz", size=32)
    write_dataset(tmp_path / "data", per_class=10, size=64)
    cmd = [sys.executable, str(REPO / "bench" / "bench_service.py"), "--model", str(tmp_path / "model.npz"),
           "--data", str(tmp_path / "data"), "--burst", "40", "--idle", "2", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["burst"]["n"] == 40 and out["burst"]["failed"] == 0 and out["burst"]["scans_per_s"] > 0
    assert out["idle"]["n"] == 2 and out["idle"]["max_ms"] > 0
    assert out["decode_only_scans_per_s"] > 0 and out["plain_loop"]["scans_per_s"] > 0
    assert out["service_exit_code"] == 0
    # where an idle scan's time goes, stage by stage, and the burst's share of its in-process ceiling
    assert set(out["idle_stages_ms"]) == {"found_complete", "queued", "decode", "classify", "to_commit", "commit"}
    assert out["idle_stages_ms"]["commit"] > 0 and out["burst_share_of_ceiling"] > 0
    assert out["cpu_ms_per_scan"]["service_burst"] > 0 and out["cpu_ms_per_scan"]["ceiling_share"] > 0
    # two in-process figures: the judge's whole work per scan (the ceiling) and decoding + prediction alone
    assert out["ceiling_scans_per_s"] > 0 and len(out["ceiling_before_after"]) == 2
    assert out["decode_and_predict_scans_per_s"] > 0 and out["burst_share_of_decode_and_predict"] > 0
    assert out["cpu_ms_per_scan"]["ceiling"] > 0 and out["cpu_ms_per_scan"]["decode_and_predict"] > 0
    assert out["service_peak_rss_mb"] > 0
    # the in-process figures ran with the service's BLAS thread cap (the default: one thread)
    assert out["blas_threads"] == 1 and "threads=1" in out["blas"]


def test_commit_benchmark_commits_every_scan_both_ways(tmp_path):
    """bench/bench_commit.py commits generated scans one batch at a time and grouped, and reports both."""
    tiny_model(tmp_path / "model.npz", size=32)
    write_dataset(tmp_path / "data", per_class=10, size=64)
    cmd = [sys.executable, str(REPO / "bench" / "bench_commit.py"), "--model", str(tmp_path / "model.npz"),
           "--data", str(tmp_path / "data"), "--scans", "130", "--group", "2", "--runs", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "1 batch of 64 per group" in lines[0] and "2 batches of 64 per group" in lines[1]
    assert lines[2].startswith("grouped / one at a time:")
