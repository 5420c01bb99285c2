"""The folder-watching service under load, against a plain classification loop, on real scans.

Runs `tumord watch` (default settings) in a temporary folder and drops real scans into it:
N=1 several times with pauses (idle latency) and N=2,000 at once (burst). A file is complete
the moment it is renamed into input/ (it is written beside the folder first, as a scanner
would); a verdict is written when the service logs `scan.classified` (after the verdict JSON,
the CSV row and the archive move are all durable, so the figures are an upper bound).
In the same run: the decode-only rate (read, decode and resize the same files with as many
threads as the service uses), and a plain loop that loads the model and classifies the same
files one by one. And two in-process figures, each measured right before and right after the
burst (the load of a shared machine drifts), in batches of `watch.batch_size`:

- the ceiling for the burst: the judge's own work per scan with no service around it, by the
  judge code the service and `tumord batch` call (tumord/judge, tumord/abstain): file checks,
  reading and hashing the bytes (the hash names the verdict), header check, decoding, input
  checks, resizing, then batched prediction with the feature distance. Every verdict needs all
  of it; what the service adds (watching, settling, the ledger, verdict files, verdicts.csv,
  moves, fsyncs, logging, handing scans between threads) is what the burst's share measures;
- decoding and batched prediction alone (the ceiling before 2026-12-02, which skipped the
  hashing, the input checks and the feature distance), printed beside it.

The in-process figures use as many BLAS and prediction threads as the service
(`watch.blas_threads` and `watch.predict_threads`, or --blas-threads and --predict-threads for
both), so they compare like with like; the BLAS kernel and thread count are printed. The
service's peak RSS (VmHWM, over its idle drops and the burst) is printed too. The service's CPU
time and peak RSS include its judge process (`watch.judge_process`); --set passes settings to the
service, e.g. `--set watch.judge_process=false` for the judge in the service's own process.

For single scans it also shows where the time goes (medians): found complete (the event and
the settle window: complete -> handed on), queued, decoding, the rest of classify (waiting for
the batch, predicting), waiting for the commit stage, and committing (files, ledger, CSV, move,
with their fsyncs), from the `stages_ms` each `scan.classified` log line carries.
With --runs N the whole measurement runs N times (ceiling and service alternate within each run)
and each figure, and the burst's share of its ceiling, is printed as min-median-max. Runs start
65 s apart: after a run's folder (thousands of files) is deleted, ext4 checks each recently
deleted inode near it on every file it creates, for about a minute (its `recently_deleted`,
0.4-0.7 ms of kernel time per file here), which the next burst's verdict files would pay. Leave
as long between two invocations of this script.

    python bench/bench_service.py [--model PATH] [--data DIR] [--burst 2000] [--idle 10] [--runs 1]
                                  [--blas-threads N] [--predict-threads N] [--set KEY=VALUE] [--json]

--model defaults to the current model in models/; --data to ../shared/datasets/brain-tumor.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tumord.abstain.judge import AbstainSettings, judge  # noqa: E402
from tumord.config import DEFAULTS  # noqa: E402
from tumord.data.images import IMAGE_SUFFIXES, decode_gray, read_scan, resize  # noqa: E402
from tumord.judge.safety import check_suffix  # noqa: E402
from tumord.judge.scan import decode_checked, file_problem, read_hashed  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402
from tumord.service.service import limit_blas_threads  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from common import add_model_and_data_options, blas_report  # noqa: E402


RECENTLY_DELETED_SECONDS = 65  # between runs: ext4's penalty on creating files after mass deletes


def scan_files(data: Path, n: int) -> list[Path]:
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        sys.exit(f"bench_service: no images under {data}")
    return [files[i % len(files)] for i in range(n)]  # reused in order if the set is smaller than n


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1), "n": len(a)}


def decode_only(files: list[Path], size: int, threads: int) -> float:
    """Scans per second for read + decode + resize alone, on `threads` threads."""
    from tumord.data.images import Preprocess

    pre = Preprocess(size=size)

    def one(p):
        return resize(decode_gray(p.read_bytes(), p), pre)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, files[:20]))  # warm-up: page cache, OpenCV initialisation
        t = time.perf_counter()
        list(pool.map(one, files))
    return len(files) / (time.perf_counter() - t)


def in_process(files: list[Path], threads: int, batch: int, predict_threads: int, per_file, per_batch) -> dict:
    """Scans per second and CPU ms per scan of per_file(path) on `threads` threads for each batch of
    files, then per_batch(results, pool of `predict_threads`) on them."""
    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(predict_threads) as predict:
        per_batch(list(pool.map(per_file, files[:batch])), predict)  # warm-up
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(files), batch):
            per_batch(list(pool.map(per_file, files[i:i + batch])), predict)
        cpu_ms = (time.process_time() - cpu) * 1000 / len(files)
    return {"scans_per_s": len(files) / (time.perf_counter() - t), "cpu_ms_per_scan": cpu_ms}


def decode_and_predict(model, files: list[Path], threads: int, batch: int, predict_threads: int) -> dict:
    """Decoding and resizing plus batched prediction, nothing else (the ceiling before 2026-12-02)."""
    def one(p):
        return resize(decode_gray(p.read_bytes(), p), model.preprocess)

    return in_process(files, threads, batch, predict_threads, one,
                      lambda images, pool: model.predict(np.stack(images), pool=pool))


def judge_only(model, files: list[Path], threads: int, batch: int, predict_threads: int) -> dict:
    """The judge's own work per scan, with no service around it: the ceiling for the burst (module
    docstring). The settings are the service's defaults."""
    watch, settings = DEFAULTS["watch"], AbstainSettings.from_config(DEFAULTS)

    def one(p):
        path = str(p)
        problem = file_problem(path, os.lstat(path), None, watch["max_bytes"])
        if problem is not None:
            sys.exit(f"bench_service: {path} {problem[0]}")
        data, _sha256 = read_hashed(path)
        check_suffix(path)
        return decode_checked(data, path, model.preprocess, watch["max_pixels"], settings.checks)

    def per_batch(decoded, pool):
        judge(model, np.stack([image for image, _ in decoded]), [reasons for _, reasons in decoded], settings, pool)

    return in_process(files, threads, batch, predict_threads, one, per_batch)


def service_pids(pid: int) -> list[int]:
    """The service and its descendants (its judge process), from /proc's children lists."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its descendants (Linux /proc)."""
    total = 0.0
    for p in service_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory so far (VmHWM, Linux /proc) of a process and its descendants, summed:
    an upper bound on their peak together."""
    total = 0.0
    for p in service_pids(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    return total


def plain_loop(model_path: Path, files: list[Path]) -> dict:
    """Load the model, then classify each file alone: what a simple script would do."""
    t = time.perf_counter()
    model = checkpoint.load(model_path)
    loaded = time.perf_counter()
    for p in files:
        model.predict(read_scan(p, model.preprocess)[None])
    end = time.perf_counter()
    return {"scans_per_s": round(len(files) / (end - loaded), 1), "load_s": round(loaded - t, 2),
            "total_s": round(end - t, 1)}


class Service:
    """tumord watch in a child process; `classified` maps a file name to when its verdict was logged."""

    def __init__(self, work: Path, model: Path, blas_threads: int, predict_threads: int, extra: tuple = ()):
        self.input, self.output = work / "input", work / "output"
        self.input.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tumord.cli", "watch", "--model", str(model), "--input", str(self.input),
             "--output", str(self.output), "--set", f"watch.blas_threads={blas_threads}",
             "--set", f"watch.predict_threads={predict_threads}", "--log-json", *extra],
            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = ""  # with http.enabled: where its HTTP server listens
        self.done: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.stages: dict[str, dict] = {}  # file -> stages_ms and latency_ms (from handed on) of its verdict
        self.ready = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            self.proc.kill()
            sys.exit("bench_service: the service did not start")

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            event = e.get("event")
            if event == "http.listening":
                self.url = e["url"]
            elif event == "service.ready":
                self.ready.set()
            elif event in ("scan.classified", "scan.failed"):
                at = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
                with self.lock:
                    self.done[e["file"]] = at
                    if "stages_ms" in e:
                        self.stages[e["file"]] = {**e["stages_ms"], "latency_ms": e.get("latency_ms", 0.0)}
                    if event == "scan.failed":
                        self.failed[e["file"]] = e["reason"]

    def wait(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(n in self.done for n in names):
                    return
            time.sleep(0.01)
        sys.exit(f"bench_service: verdicts missing after {timeout}s")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def drop(svc: Service, staging: Path, batch: list[tuple[str, Path]]) -> dict[str, float]:
    """Copies the files beside input/, then renames them in; returns each file's complete time."""
    for name, src in batch:
        shutil.copyfile(src, staging / name)
    completed = {}
    for name, _ in batch:
        completed[name] = time.time()
        os.replace(staging / name, svc.input / name)
    return completed


def run(args) -> dict:
    model_path = args.model or current_model_path(REPO / DEFAULTS["paths"]["models"])
    model = checkpoint.load(model_path)
    files = scan_files(args.data, args.burst)
    threads, batch = DEFAULTS["watch"]["decode_threads"], DEFAULTS["watch"]["batch_size"]
    limit_blas_threads(args.blas_threads)  # as the service does, for the in-process figures
    result = {"model": model.identity, "input_size": model.preprocess.size, "cores": os.cpu_count(), "set": args.set,
              "data": str(args.data), "decode_threads": threads, "batch_size": batch,
              "blas_threads": args.blas_threads, "predict_threads": args.predict_threads, "blas": blas_report()}

    result["decode_only_scans_per_s"] = round(decode_only(files, model.preprocess.size, threads), 1)
    result["decode_only_1_thread_scans_per_s"] = round(decode_only(files, model.preprocess.size, 1), 1)
    result["plain_loop"] = plain_loop(model_path, files)

    work = Path(tempfile.mkdtemp(prefix="tumord-bench-"))
    try:
        staging = work / "staging"
        staging.mkdir()
        svc = Service(work, model_path, args.blas_threads, args.predict_threads,
                      tuple(a for kv in args.set for a in ("--set", kv)))
        idle, stages = [], []
        for i in range(args.idle):
            name = f"idle-{i:03d}{files[i].suffix.lower()}"
            completed = drop(svc, staging, [(name, files[i])])
            svc.wait([name], 30)
            total = (svc.done[name] - completed[name]) * 1000
            idle.append(total)
            if name in svc.stages:
                st = dict(svc.stages[name])
                st["found_complete"] = max(total - st.pop("latency_ms"), 0.0)
                stages.append(st)
            time.sleep(0.3)  # let the service go idle again
        result["idle"] = percentiles(idle)
        if stages:
            result["idle_stages_ms"] = {k: round(float(np.median([st[k] for st in stages])), 1)
                                        for k in ("found_complete", "queued", "decode", "classify", "to_commit",
                                                  "commit")}

        # the ceilings right before and right after the burst (in mirrored order): on a shared machine
        # the load drifts within minutes, and the burst's share of its ceiling must not measure the drift
        ceilings = {"judge": [judge_only(model, files, threads, batch, args.predict_threads)],
                    "decode_and_predict": [decode_and_predict(model, files, threads, batch, args.predict_threads)]}
        service_cpu = cpu_seconds(svc.proc.pid)
        drops = [(f"burst-{i:05d}{p.suffix.lower()}", p) for i, p in enumerate(files)]
        completed = drop(svc, staging, drops)
        names = [n for n, _ in drops]
        svc.wait(names, 600)
        lat = [(svc.done[n] - completed[n]) * 1000 for n in names]
        span = max(svc.done[n] for n in names) - min(completed.values())
        result["burst"] = {**percentiles(lat), "scans_per_s": round(len(names) / span, 1),
                           "failed": len([n for n in names if n in svc.failed])}
        service_cpu = (cpu_seconds(svc.proc.pid) - service_cpu) * 1000 / len(names)
        result["service_peak_rss_mb"] = round(peak_rss_mb(svc.proc.pid), 1)
        ceilings["decode_and_predict"].append(decode_and_predict(model, files, threads, batch, args.predict_threads))
        ceilings["judge"].append(judge_only(model, files, threads, batch, args.predict_threads))
        rate = {k: (v[0]["scans_per_s"] + v[1]["scans_per_s"]) / 2 for k, v in ceilings.items()}
        # CPU time per scan does not drift with the machine's load as rates do: on a shared machine
        # it tells what the service adds to the judge's work
        cpu = {k: (v[0]["cpu_ms_per_scan"] + v[1]["cpu_ms_per_scan"]) / 2 for k, v in ceilings.items()}
        result["cpu_ms_per_scan"] = {"ceiling": round(cpu["judge"], 2),
                                     "decode_and_predict": round(cpu["decode_and_predict"], 2),
                                     "service_burst": round(service_cpu, 2),
                                     "ceiling_share": round(cpu["judge"] / service_cpu, 3)}
        result["ceiling_scans_per_s"] = round(rate["judge"], 1)
        result["ceiling_before_after"] = [round(c["scans_per_s"], 1) for c in ceilings["judge"]]
        result["decode_and_predict_scans_per_s"] = round(rate["decode_and_predict"], 1)
        result["decode_and_predict_before_after"] = [round(c["scans_per_s"], 1) for c in ceilings["decode_and_predict"]]
        result["burst_share_of_ceiling"] = round(result["burst"]["scans_per_s"] / rate["judge"], 3)
        result["burst_share_of_decode_and_predict"] = round(result["burst"]["scans_per_s"]
                                                            / rate["decode_and_predict"], 3)
        result["service_exit_code"] = svc.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def print_spread(runs: list[dict]) -> None:
    """Each figure over the runs as min-median-max (runs in one sitting: the ratios are what compare)."""
    from common import spread

    r = runs[0]
    print(f"model {r['model']['version']} ({r['input_size']}x{r['input_size']}), {r['cores']} cores, data {r['data']}; "
          f"{len(runs)} runs, min-median-max")
    print(f"BLAS: {r['blas']}")
    rows = [("ceiling: the judge's work (read, hash, decode, checks, predict, feature distance), no service, "
             "scans/s", [x["ceiling_scans_per_s"] for x in runs]),
            ("decode + batched predict only (the old ceiling), scans/s",
             [x["decode_and_predict_scans_per_s"] for x in runs]),
            (f"service burst N={r['burst']['n']}, scans/s", [x["burst"]["scans_per_s"] for x in runs]),
            ("burst / ceiling", [x["burst_share_of_ceiling"] for x in runs]),
            ("burst / decode + predict only", [x["burst_share_of_decode_and_predict"] for x in runs]),
            ("CPU per scan, ceiling, ms", [x["cpu_ms_per_scan"]["ceiling"] for x in runs]),
            ("CPU per scan, decode + predict only, ms", [x["cpu_ms_per_scan"]["decode_and_predict"] for x in runs]),
            ("CPU per scan, service burst, ms", [x["cpu_ms_per_scan"]["service_burst"] for x in runs]),
            ("CPU per scan, ceiling / service", [x["cpu_ms_per_scan"]["ceiling_share"] for x in runs]),
            ("service peak RSS (idle drops and burst; with its judge process, summed), MB",
             [x["service_peak_rss_mb"] for x in runs]),
            ("service idle p50, ms", [x["idle"]["p50_ms"] for x in runs]),
            ("service idle p95, ms", [x["idle"]["p95_ms"] for x in runs])]
    for k in r.get("idle_stages_ms", {}):
        rows.append((f"  idle {k}, ms (median)", [x["idle_stages_ms"][k] for x in runs]))
    for name, values in rows:
        print(f"{name}: {spread(values, '{:.3g}' if '/' in name else '{:.1f}')}")
    print(f"failed: {sum(x['burst']['failed'] for x in runs)}; exit codes {[x['service_exit_code'] for x in runs]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(ap, REPO)
    ap.add_argument("--burst", type=int, default=2000, help="scans dropped at once")
    ap.add_argument("--idle", type=int, default=10, help="single scans dropped one at a time")
    ap.add_argument("--blas-threads", type=int, default=DEFAULTS["watch"]["blas_threads"],
                    help="BLAS threads of the service and of the in-process figures (0: the library's default)")
    ap.add_argument("--predict-threads", type=int, default=DEFAULTS["watch"]["predict_threads"],
                    help="threads predicting a batch's chunks, in the service and in-process")
    ap.add_argument("--runs", type=int, default=1, help="repeat everything; figures as min-median-max")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for the service (as `tumord watch --set`), e.g. watch.judge_process=false")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"bench_service: no data at {args.data} (pass --data DIR)")
    runs = []
    for i in range(args.runs):
        if i:
            time.sleep(RECENTLY_DELETED_SECONDS)  # the module docstring says why
        runs.append(run(args))
    r = runs[-1]
    if args.json:
        print(json.dumps(r if args.runs == 1 else {"runs": runs}))
        return
    if args.runs > 1:
        print_spread(runs)
        return
    b, i, p = r["burst"], r["idle"], r["plain_loop"]
    print(f"model {r['model']['version']} ({r['input_size']}x{r['input_size']}), {r['cores']} cores, data {r['data']}")
    print(f"BLAS (service and in-process, --blas-threads {r['blas_threads']}, --predict-threads "
          f"{r['predict_threads']}): {r['blas']}")
    print(f"decode only ({r['decode_threads']} threads): {r['decode_only_scans_per_s']} scans/s "
          f"(1 thread: {r['decode_only_1_thread_scans_per_s']})")
    print(f"ceiling, the judge's work with no service: {r['ceiling_scans_per_s']} scans/s (read, hash, decode, "
          f"checks, batched predict, feature distance; batch {r['batch_size']}; mean of right before and right "
          f"after the burst: {r['ceiling_before_after']})")
    print(f"decode + batched predict only (the old ceiling): {r['decode_and_predict_scans_per_s']} scans/s "
          f"({r['decode_and_predict_before_after']})")
    print(f"plain loop, one by one:    {p['scans_per_s']} scans/s (model load {p['load_s']} s)")
    print(f"service burst N={b['n']}:    {b['scans_per_s']} scans/s; complete -> verdict p50 {b['p50_ms']} ms, "
          f"p95 {b['p95_ms']} ms, max {b['max_ms']} ms; failed {b['failed']}")
    print(f"service idle N=1 (x{i['n']}):  p50 {i['p50_ms']} ms, p95 {i['p95_ms']} ms, max {i['max_ms']} ms")
    if "idle_stages_ms" in r:
        print("  where the time goes (medians, ms): " + ", ".join(f"{k} {v}" for k, v in r["idle_stages_ms"].items()))
    c = r["cpu_ms_per_scan"]
    print(f"burst / ceiling: {r['burst_share_of_ceiling']:.0%} (/ decode + predict only: "
          f"{r['burst_share_of_decode_and_predict']:.0%}); CPU per scan: ceiling {c['ceiling']} ms, decode + predict "
          f"only {c['decode_and_predict']} ms, service {c['service_burst']} ms ({c['ceiling_share']:.0%})")
    print(f"service peak RSS (idle drops and burst; with its judge process, summed): {r['service_peak_rss_mb']} MB")
    print(f"service exit code after SIGTERM: {r['service_exit_code']}")


if __name__ == "__main__":
    main()
