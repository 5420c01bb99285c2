"""What the series rule does to series-level false alarms and detections, on the project's real scans.

The datasets hold single slices, not series. Synthetic series are built from the held-out scans
of the shipped model (its report.json lists its split): per class, the scans are grouped into
near-duplicate groups (tumord.data.dedup, similarity 0.95), the groups are put one after another
(in file-name order of their first member), and that sequence is cut into consecutive runs of n
slices: neighbouring slices of a series look alike, and so do near-duplicates.

- normal series: n normal slices. A series verdict of tumor is a false alarm.
- tumor series: the same normal runs with m of their slices replaced by tumor slices (m = 1, 3).
  A series verdict of tumor is a detection.

Each rule from tumord.service.series (max, top_k_mean with k=3) and, for reference, the plain
mean, on the same series. Scans are judged once by the model; the rules only combine.

    python bench/series_rule.py [--model PATH] [--data DIR] [--splits test,val] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tumord.data.dedup import near_duplicate_groups  # noqa: E402
from tumord.data.images import read_scan  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402
from tumord.service.series import Rule, combine  # noqa: E402

RULES = {"max": Rule("max"), "top3_mean": Rule("top_k_mean", 3)}


def ordered(images: np.ndarray) -> np.ndarray:
    """Indices with near-duplicate groups consecutive, groups in order of their first member."""
    thumbs = np.stack([cv2.resize(i, (32, 32), interpolation=cv2.INTER_AREA) for i in images])
    groups = near_duplicate_groups(thumbs, 0.95)
    return np.array(sorted(range(len(images)), key=lambda i: (groups[i], i))), len(set(groups.tolist()))


def verdicts(series_probs: list[np.ndarray], names: list[str]) -> dict[str, float]:
    out = {}
    for label, rule in RULES.items():
        out[label] = float(np.mean([combine(p, names, rule)[0] != "normal" for p in series_probs]))
    neg = names.index("normal")
    out["mean"] = float(np.mean([1 - p[:, neg].mean() >= 0.5 for p in series_probs]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "brain-tumor")
    ap.add_argument("--splits", default="test", help="held-out splits of the model's report to use (test,val)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    path = args.model or current_model_path(REPO / "models")
    model = checkpoint.load(path)
    report = json.loads((Path(path).parent / "report.json").read_text())
    files = [f for s in args.splits.split(",") for f in report["split"][s]]
    by_class = {c: [args.data / f for f in files if f.startswith(c + "/")] for c in model.class_names}
    probs, order, ngroups = {}, {}, {}
    for c, paths in by_class.items():
        images = np.stack([read_scan(p, model.preprocess) for p in paths])
        probs[c] = model.predict(images)
        order[c], ngroups[c] = ordered(images)
    normal, tumor = probs["normal"][order["normal"]], probs["tumor"][order["tumor"]]
    rows = []
    for n in (1, 5, 10, 20, 40):
        runs = [normal[k : k + n] for k in range(0, len(normal) - n + 1, n)]
        row = {"slices": n, "series": len(runs), "false_alarm": verdicts(runs, model.class_names)}
        for m in (1, 3):
            if m > n:
                continue
            made, t = [], 0
            for run in runs:
                run = run.copy()
                spots = np.linspace(0, n - 1, m + 2)[1:-1].round().astype(int) if m < n else np.arange(n)
                for s in spots:
                    run[s] = tumor[t % len(tumor)]
                    t += 1
                made.append(run)
            row[f"detected_{m}_tumor_slices"] = verdicts(made, model.class_names)
        rows.append(row)
    result = {"date": str(date.today()), "model": model.identity, "splits": args.splits,
              "normal_slices": len(normal), "tumor_slices": len(tumor), "groups": ngroups, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['date']} model {model.identity['version']}, splits {args.splits}: {len(normal)} normal "
          f"slices ({ngroups['normal']} near-duplicate groups), {len(tumor)} tumor slices")
    print(f"{'slices':>6} {'series':>6}  false alarms: max / top3 / mean   detected (1 tumor slice)   (3 tumor slices)")
    for r in rows:
        fa = r["false_alarm"]
        d1, d3 = r.get("detected_1_tumor_slices"), r.get("detected_3_tumor_slices")
        fmt = lambda d: " / ".join(f"{d[k]:.3f}" for k in ("max", "top3_mean", "mean")) if d else "-"  # noqa: E731
        print(f"{r['slices']:>6} {r['series']:>6}  {fmt(fa):>24}   {fmt(d1):>24}   {fmt(d3):>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
