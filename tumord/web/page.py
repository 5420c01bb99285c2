"""The web page, rendered on the server so that it reads without JavaScript.

`static/page.js` only refreshes the live part (`/?live`) every two seconds and handles the drop
zone; `static/page.css` styles it. Both are package data, served by the same process: no CDN.
"""
from __future__ import annotations

import re
from html import escape
from importlib import resources
from urllib.parse import quote

from tumord.data.images import IMAGE_SUFFIXES

STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?Z")


def static_files() -> dict[str, tuple[str, bytes]]:
    folder = resources.files("tumord.web") / "static"
    return {name: (kind, (folder / name).read_bytes()) for name, kind in STATIC.items()}


def looks_like_time(value: str) -> bool:
    return TIME.fullmatch(value) is not None


def _clock(iso: str | None) -> str:
    """2026-12-02T10:41:07.123Z -> 10:41:07 (the date is in the title)."""
    return escape(iso[11:19]) if iso else ""


def _when(iso: str | None) -> str:
    return f'<time datetime="{escape(iso)}" title="{escape(iso)}">{escape(iso[:19].replace("T", " "))} UTC</time>' \
        if iso else "unknown"


def render(monitor, live_only: bool = False, max_upload_bytes: int = 0) -> str:
    snap = monitor.snapshot()
    live = "\n".join([_model(snap), _counts(snap), _chart(monitor.hour()), _verdicts(monitor.verdicts(limit=25)),
                      _failed(monitor.failed())])
    if live_only:
        return live
    state = "ok" if snap["ready"] else "bad"
    accept = ",".join(IMAGE_SUFFIXES)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tumord</title>
<link rel="stylesheet" href="/static/page.css">
<link rel="icon" href="/static/favicon.svg">
<script src="/static/page.js" defer></script>
</head>
<body>
<header><h1>tumord</h1><p id="status" class="{state}">{escape(snap["status"])}</p></header>
<main>
<section id="drop" aria-labelledby="drop-title">
<h2 id="drop-title">Classify a scan</h2>
<label id="dropzone" for="file">Drop a scan here, or choose one<br>
<small>{escape(", ".join(IMAGE_SUFFIXES))}; it is written into the input folder like any other scan</small></label>
<input type="file" id="file" accept="{escape(accept)}" data-max-bytes="{max_upload_bytes}">
<p id="drop-result" aria-live="polite"><noscript>Uploading needs JavaScript; everything else on this
page reads without it (reload to refresh).</noscript></p>
</section>
<div id="live">
{live}
</div>
</main>
</body>
</html>
"""


def _model(snap: dict) -> str:
    m = snap["model"]
    if m is None:
        return '<section id="model"><h2>Serving model</h2><p>No model loaded yet.</p></section>'
    test = m["test"]
    figures = "".join(f"<tr><th>{escape(k)}</th><td>{v:.4f}</td></tr>" if isinstance(v, float)
                      else f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in test.items())
    return f"""<section id="model"><h2>Serving model</h2>
<dl>
<dt>Version</dt><dd id="model-version">{escape(m["version"])}</dd>
<dt>Weights SHA-256</dt><dd><code title="{escape(m["sha256"])}">{escape(m["sha256"][:16])}…</code></dd>
<dt>Trained</dt><dd>{_when(m["created_at"])}</dd>
<dt>Promoted</dt><dd>{_when(m["promoted_at"]) if m["promoted_at"] else "not from the registry (--model)"}</dd>
<dt>Serving since</dt><dd>{_when(m["serving_since"])}</dd>
</dl>
<table class="figures"><caption>Held-out test figures</caption>{figures or "<tr><td>none recorded</td></tr>"}</table>
</section>"""


def _counts(snap: dict) -> str:
    c = snap["counts"]
    cells = "".join(f'<div><span class="n" id="count-{k}">{v}</span> {k}</div>'
                    for k, v in [*c.items(), ("queued", snap["queued"])])
    return f"""<section id="counts"><h2>Since start <small>({_when(snap["started_at"])})</small></h2>
<div class="counts">{cells}</div></section>"""


def _chart(minutes) -> str:
    """Scans per minute (bars) and mean latency (line) over the last hour, as inline SVG."""
    w, h, bar = 600, 120, 10
    most = max([m.classified + m.failed for m in minutes] + [1])
    means = [m.latency_sum / (m.classified + m.failed) if m.classified + m.failed else None for m in minutes]
    slowest = max([x for x in means if x is not None] + [0.001])
    bars, points = [], []
    for i, (m, mean) in enumerate(zip(minutes, means)):
        n = m.classified + m.failed
        if n:
            bh = h * n / most
            bars.append(f'<rect x="{i * bar}" y="{h - bh:.1f}" width="{bar - 1}" height="{bh:.1f}">'
                        f"<title>{n} scans, mean latency {mean:.3f} s</title></rect>")
        if mean is not None:
            points.append(f"{i * bar + bar / 2:.0f},{h - h * mean / slowest:.1f}")
    total = sum(m.classified + m.failed for m in minutes)
    line = f'<polyline points="{" ".join(points)}"/>' if len(points) > 1 else ""
    return f"""<section id="hour"><h2>Last hour</h2>
<p>{total} scans; most in one minute: {most if total else 0}; slowest minute's mean latency:
{slowest if total else 0:.3f} s. <span class="key bars">scans per minute</span>
<span class="key line">mean latency, file complete to verdict</span></p>
<svg viewBox="0 0 {w} {h}" role="img" aria-label="scans per minute and mean latency over the last hour"
 class="chart">{"".join(bars)}{line}</svg></section>"""


def _verdicts(rows: list[dict]) -> str:
    body = []
    for r in rows:
        rid = escape(r["id"])
        if r["outcome"] == "classified":
            heat = (f'<details data-id="{rid}"><summary>heat map</summary><img loading="lazy" alt="heat map of '
                    f'{escape(r["file"])}" src="/api/verdicts/{quote(r["id"], safe="")}/heatmap.png"></details>'
                    if r["heatmap"] else "")
            body.append(f'<tr data-file="{escape(r["file"])}" data-outcome="classified"><td>{escape(r["file"])}</td>'
                        f'<td class="label">{_label(r)}</td><td>{r["confidence"]:.3f}</td>'
                        f'<td>{_clock(r["recorded_at"])}</td><td>{escape(r["model"])}</td><td>{heat}</td></tr>')
        else:
            body.append(f'<tr data-file="{escape(r["file"])}" data-outcome="failed" class="failed">'
                        f'<td>{escape(r["file"])}</td><td class="label">failed</td><td></td>'
                        f'<td>{_clock(r["recorded_at"])}</td><td></td><td></td></tr>')
    rows_html = "\n".join(body) or '<tr><td colspan="6">No scans yet.</td></tr>'
    return f"""<section id="verdicts"><h2>Latest verdicts</h2>
<table><thead><tr><th>File</th><th>Label</th><th>Confidence</th><th>Time (UTC)</th><th>Model</th><th></th></tr>
</thead><tbody>{rows_html}</tbody></table></section>"""


def _label(r: dict) -> str:
    if not r["abstained"]:
        return escape(r["label"])
    why = "; ".join(r["abstain_reasons"]) or "the model abstained"
    return f'<span class="abstained" title="{escape(why)}">abstained</span> <small>({escape(r["label"])})</small>'


def _failed(rows: list[dict]) -> str:
    items = "".join(f'<li data-file="{escape(r["file"])}"><strong>{escape(r["file"])}</strong> '
                    f'({_clock(r["recorded_at"])}): <span class="reason">{escape(r["error"] or "")}</span></li>'
                    for r in rows)
    return f"""<section id="failed"><h2>Failed files</h2>
{f"<ul>{items}</ul>" if items else "<p>None.</p>"}</section>"""


def login_form(message: str = "") -> str:
    note = f'<p class="bad">{escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tumord: token</title>
<link rel="stylesheet" href="/static/page.css"><link rel="icon" href="/static/favicon.svg"></head>
<body><main><h1>tumord</h1>{note}
<form method="post" action="/login"><label>Token <input type="password" name="token" autocomplete="off"></label>
<button>Open</button></form></main></body></html>
"""
