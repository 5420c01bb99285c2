"""tumord watch's HTTP server, driven over real sockets against a real service process."""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import REPO, drop, make_model, point
from tests.web.conftest import png

TOKEN = "0123456789abcdef0123456789abcdef"


def metrics(w) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from /metrics, parsed by prometheus-client's own parser."""
    status, headers, body = w.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def raw_get(w, target: str, headers: dict | None = None) -> tuple[int, bytes]:
    """A request line sent exactly as written (urllib would normalise some of these tricks away)."""
    host, port = urllib.parse.urlsplit(w.url).netloc.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", (headers or {}).get("Host", f"{host}:{port}"))
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def upload(w, name: str, data: bytes, content_type: str = "application/octet-stream", headers=None):
    query = urllib.parse.urlencode({"name": name})
    return w.get(f"/api/upload?{query}", method="POST", data=data,
                 headers={"Content-Type": content_type, **(headers or {})})


def test_health_metrics_and_swap(web, tmp_path):
    """/livez and /readyz answer; /metrics counts scans by outcome, latencies, batches, the serving
    model (info), swaps and the label shares, under Prometheus' naming rules."""
    w = web(watch={"explain": True}).start()
    w.wait_for("service.ready")
    assert w.get("/livez")[0] == 200
    status, _, body = w.get("/readyz")
    assert status == 200 and b"classified 0" in body
    rng = np.random.default_rng(0)
    for i in range(3):
        drop(w.input, f"s{i}.png", png(rng))
    drop(w.input, "bad.png", b"not an image at all")
    w.wait_until(lambda: len(w.json("/api/verdicts")) == 4, what="4 records")
    m = metrics(w)
    version = w.events("service.ready")[0]["model"]["version"]
    records = [json.loads(p.read_text()) for p in w.output.glob("*.json")]
    abstained = sum(bool(r["abstained"]) for r in records)  # the 32-pixel test scans are below abstain.min_side
    assert len(records) == 3 and abstained > 0
    assert m[("tumord_scans_total", (("outcome", "abstained"),))] == abstained
    assert m[("tumord_scans_total", (("outcome", "classified"),))] == 3 - abstained
    assert m[("tumord_scans_total", (("outcome", "failed"),))] == 1
    assert m[("tumord_scan_latency_seconds_count", ())] == 4
    assert m[("tumord_classify_latency_seconds_count", ())] == 3
    assert m[("tumord_decode_seconds_count", ())] == 4
    assert m[("tumord_batch_scans_sum", ())] == 4
    assert m[("tumord_predict_seconds_count", ())] >= 1
    assert m[("tumord_queued_scans", ())] == 0 and m[("tumord_ready", ())] == 1
    assert sum(v for (n, _), v in m.items() if n == "tumord_verdicts_total") == 3
    shares = [v for (n, _), v in m.items() if n == "tumord_recent_verdicts_ratio"]
    assert shares and sum(shares) == pytest.approx(1.0)
    info = [dict(labels) for (n, labels), _ in m.items() if n == "tumord_model_info"]
    assert info and info[0]["version"] == version
    assert m[("tumord_model_swaps_total", ())] == 0
    for name, _ in m:  # base units, and counters end in _total
        assert not name.endswith(("_ms", "_milliseconds", "_minutes", "_percent")), name

    new = make_model(w.models, seed=7)
    w.wait_for("model.swapped")
    m = metrics(w)
    assert m[("tumord_model_swaps_total", ())] == 1
    assert [dict(labels)["version"] for (n, labels), _ in m.items() if n == "tumord_model_info"] == [new["version"]]
    assert w.stop() == 0


def test_verdicts_api_newest_first_from_memory(web):
    """?since= and ?limit= page through this run's verdicts newest first, from the service's own record:
    with the verdict files gone from output/, the API still answers (it never reads the folder)."""
    w = web(watch={"explain": True}).start()
    rng = np.random.default_rng(1)
    for i in range(5):
        drop(w.input, f"v{i}.png", png(rng))
        w.wait_for("scan.classified", i + 1)
    drop(w.input, "broken.png", b"\x89PNG\r\n\x1a\n truncated")
    w.wait_for("scan.failed")
    for p in w.output.glob("*.json"):
        p.unlink()
    everything = w.json("/api/verdicts")
    assert [v["seq"] for v in everything] == [6, 5, 4, 3, 2, 1]
    assert [v["file"] for v in everything[1:]] == [f"v{i}.png" for i in (4, 3, 2, 1, 0)]
    assert [v["seq"] for v in w.json("/api/verdicts?since=3")] == [6, 5, 4]
    assert [v["seq"] for v in w.json("/api/verdicts?since=1&limit=2")] == [6, 5]
    at = everything[3]["recorded_at"]  # v2's time: only later ones (v0..v2 may share a millisecond)
    assert all(v["recorded_at"] > at for v in w.json(f"/api/verdicts?since={at}"))
    for bad, words in (("limit=0", b"limit"), ("limit=x", b"limit"), ("since=yesterday", b"since")):
        status, _, body = w.get(f"/api/verdicts?{bad}")
        assert status == 400 and words in body, (bad, body)

    good, failed = everything[1], everything[0]
    assert failed["outcome"] == "failed" and "broken.png" in failed["error"]
    one = w.json("/api/verdicts/" + urllib.parse.quote(good["id"], safe=""))
    assert one["record"]["label"] == good["label"] and one["record"]["sha256"]
    status, headers, body = w.get(f"/api/verdicts/{urllib.parse.quote(good['id'], safe='')}/heatmap.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    assert w.get(f"/api/verdicts/{urllib.parse.quote(failed['id'], safe='')}/heatmap.png")[0] == 404
    assert w.get("/api/verdicts/no-such-id")[0] == 404
    assert w.stop() == 0


def test_request_paths_never_reach_files(web, tmp_path):
    """../, encoded slashes, NUL bytes and bad encodings in ids and static names answer 404."""
    w = web(watch={"explain": True}).start()
    drop(w.input, "x.png", png(np.random.default_rng(2)))
    w.wait_for("scan.classified")
    (tmp_path / "secret.txt").write_text("SECRET")
    tricks = ["/api/verdicts/..%2F..%2Fsecret.txt", "/api/verdicts/../../secret.txt", "/api/verdicts/%2e%2e/heatmap.png",
              "/api/verdicts/..%2Fverdicts.csv/heatmap.png", "/api/verdicts/x%00.png/heatmap.png",
              "/api/verdicts/%ff%fe", "/static/..%2F..%2Fsecret.txt", "/static/../api.py", "/static/page.css%00",
              "/static/%2e%2e%2fsettings.py", "/..%2Fsecret.txt", "//etc/passwd", "/static//etc/passwd"]
    for target in tricks:
        status, body = raw_get(w, target)
        assert status == 404, (target, status)
        assert b"SECRET" not in body and b"import" not in body and b"root:" not in body, target
    assert raw_get(w, "/static/page.css")[0] == 200
    # another Host: a page elsewhere that rebinds its DNS name to 127.0.0.1 gets nothing
    assert raw_get(w, "/api/verdicts", {"Host": "evil.example:80"})[0] == 421
    assert w.stop() == 0


def test_uploads_land_in_input_only_with_safe_names(web, tmp_path):
    """Uploaded names lose their folders, dots and control characters; nothing is written outside
    input/; wrong types, sizes and content types are refused with a reason."""
    w = web(watch={"max_bytes": 20_000}).start()
    w.wait_for("service.ready")
    rng = np.random.default_rng(3)
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(w.input) and not p.is_relative_to(w.output)}
    names = {"../evil.png": "evil.png", "..%2F..%2Fevil2.png": "_2F.._2Fevil2.png",
             "a\x00b.png": "a_b.png", "sub/dir/c.png": "c.png", "..\\..\\win.png": "win.png",
             ".hidden.png": "hidden.png", "/abs/olute.PNG": "olute.png", "évé nt (1).png": "évé nt (1).png"}
    got = {}
    for hint, _ in names.items():
        status, _, body = upload(w, hint, png(rng))
        assert status == 201, (hint, body)
        got[hint] = json.loads(body)["file"]
    assert got == names
    assert all("/" not in n and "\0" not in n and not n.startswith(".") for n in got.values())
    w.wait_until(lambda: len(w.json("/api/verdicts?limit=100")) == len(names), what="all uploads judged")
    assert {v["file"] for v in w.json("/api/verdicts?limit=100")} == set(got.values())
    after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(w.input) and not p.is_relative_to(w.output)}
    assert after == before  # nothing written anywhere but input/ (and the service's own output/)
    assert not list(w.input.glob(".tumord-upload.*"))  # no temporary file left

    for name, data, kind, status, words in [
            ("notes.txt", b"hello", "application/octet-stream", 400, "not an image file name"),
            ("big.png", b"x" * 30_000, "application/octet-stream", 413, "limit"),
            ("form.png", png(rng), "text/plain", 415, "application/octet-stream"),
            ("empty.png", b"", "application/octet-stream", 400, "empty")]:
        code, _, body = upload(w, name, data, kind)
        assert code == status and words in json.loads(body)["error"], (name, code, body)
    assert not list(w.input.iterdir())
    # the same name while the first is still waiting: link(2) never replaces, the second gets -2
    first, second = (json.loads(upload(w, "dup.png", png(rng))[2])["file"] for _ in range(2))
    assert (first, second) == ("dup.png", "dup-2.png")
    assert w.stop() == 0


def test_token_required_off_loopback(web, tmp_path):
    """Any bind but loopback needs http.token_file; then every endpoint but the probes and the login
    form asks for the token (Bearer header or the cookie the login form sets)."""
    web(http={"bind": "0.0.0.0"})  # writes config.yaml
    refused = subprocess.run([sys.executable, "-m", "tumord.cli", "watch"], cwd=tmp_path,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "http.token_file" in refused.stderr, refused.stderr
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    w = web(http={"bind": "0.0.0.0", "token_file": str(token_file)}).start()
    w.url = w.url.replace("0.0.0.0", "127.0.0.1")
    w.wait_for("service.ready")
    assert w.get("/livez")[0] == 200 and w.get("/readyz")[0] == 200
    for path in ("/metrics", "/api/verdicts", "/api/summary"):
        assert w.get(path)[0] == 401
        assert w.get(path, {"Authorization": "Bearer " + TOKEN[:-1] + "0"})[0] == 401
        assert w.get(path, {"Authorization": "Bearer " + TOKEN})[0] == 200
    assert upload(w, "u.png", png(np.random.default_rng(4)))[0] == 401
    status, _, body = w.get("/")
    assert status == 200 and b'name="token"' in body  # urllib followed the redirect to /login
    assert w.get("/login", method="POST", data=b"token=wrong")[0] == 401
    host, port = urllib.parse.urlsplit(w.url).netloc.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/login", body=f"token={TOKEN}", headers={"Content-Type": "application/x-www-form-urlencoded"})
    answer = conn.getresponse()
    assert answer.status == 303 and answer.getheader("Set-Cookie").startswith(f"tumord_token={TOKEN}; HttpOnly")
    conn.close()
    cookie = {"Cookie": f"tumord_token={TOKEN}"}
    assert w.get("/api/verdicts", cookie)[0] == 200
    assert w.stop() == 0


def test_readyz_503_while_stalled(web):
    """A stage that stops making progress (here: verdicts.csv replaced by a folder, so every commit
    fails) makes /readyz 503 after watch.stall_seconds, and 200 again once it recovers."""
    w = web(watch={"stall_seconds": 1.0}).start()
    w.wait_for("service.ready")
    rng = np.random.default_rng(5)
    drop(w.input, "first.png", png(rng))
    w.wait_until(lambda: len(w.json("/api/verdicts")) == 1, what="the first verdict")  # verdicts.csv exists
    assert w.get("/readyz")[0] == 200
    csv = w.output / "verdicts.csv"
    csv.unlink()
    csv.mkdir()
    drop(w.input, "s.png", png(rng))
    w.wait_until(lambda: w.get("/readyz")[0] == 503, timeout=20, what="/readyz 503")
    assert w.get("/livez")[0] == 200  # alive, only not ready
    csv.rmdir()
    w.wait_until(lambda: w.get("/readyz")[0] == 200, timeout=40, what="/readyz 200 again")
    assert w.stop() == 0


def test_http_off_by_default_and_taken_port_is_a_config_error(tmp_path):
    """config.yaml ships with http off; a port already taken stops the start with exit 2 and a reason."""
    from tumord.config import load_config

    assert load_config(REPO / "config.yaml")["http"]["enabled"] is False
    make_model(tmp_path / "models")
    (tmp_path / "input").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "tumord.cli", "watch", "--set", "http.enabled=true",
                              "--set", f"http.port={port}"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2 and f"port {port}" in run.stderr and "in use" in run.stderr, run.stderr


def test_readyz_before_start_and_after_stop(tmp_path):
    """/readyz is 503 while the model loads (the server listens first) and while draining."""
    from tumord.web.api import App
    from tumord.web.monitor import Monitor
    from tumord.web.settings import HttpSettings

    monitor = Monitor(tmp_path)
    settings = HttpSettings("127.0.0.1", 0, None, tmp_path, tmp_path, tmp_path, 1000)
    app = App(settings, monitor)
    host = {"Host": "127.0.0.1"}
    assert app.handle("GET", "/readyz", host).status == 503
    assert app.handle("GET", "/livez", host).status == 200

    class Healthy:  # the one method /readyz asks of a started service
        def healthy(self):
            return True

        def status(self):
            return "fine"

    monitor.started(Healthy())
    assert app.handle("GET", "/readyz", host).status == 200
    monitor.stopping()
    assert app.handle("GET", "/readyz", host).status == 503
