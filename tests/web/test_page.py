"""The web page in a real browser: Debian's chromium, driven by pytest-playwright.

TUMORD_SCREENSHOT=docs/web-page.png saves the screenshot of the first test there (how the one in
docs/http.md was made); otherwise it goes to the test's temporary folder.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.service.conftest import REPO, make_model
from tests.web.conftest import png

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402
FIGURES = {"n": 581, "accuracy": 0.98107, "sensitivity": 0.97452, "specificity": 0.98876, "auc": 0.98917}
SECONDS = 10_000  # milliseconds Playwright waits for what the page should show ("within a few seconds")


def open_page(page, w) -> list[str]:
    """Opens the page; returns the list the browser's console errors and page errors go to."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(w.url + "/")
    return errors


def wait_loaded(img) -> None:
    """Until the image has arrived and decoded (naturalWidth > 0), or SECONDS pass."""
    deadline = time.monotonic() + SECONDS / 1000
    while img.evaluate("i => i.complete && i.naturalWidth") == 0:
        assert time.monotonic() < deadline, "the image did not load"
        time.sleep(0.05)


def drop_file(page, name: str, data: bytes) -> None:
    """A real drop event on the drop zone, carrying the file as a browser would."""
    page.evaluate("""([name, bytes]) => {
        const file = new File([new Uint8Array(bytes)], name, {type: "image/png"});
        const dt = new DataTransfer();
        dt.items.add(file);
        document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""", [name, list(data)])


def test_page_loads_clean_and_a_dropped_scan_shows_its_verdict_and_heat_map(web, page, tmp_path):
    """No console errors; a scan dropped on the page gets its row and its heat map within seconds."""
    w = web(watch={"explain": True})
    version = json.loads((w.models / "current.json").read_text())["current"]
    (w.models / "versions" / version / "report.json").write_text(json.dumps({"test": FIGURES}))
    w.start().wait_for("service.ready")
    errors = open_page(page, w)
    assert page.locator("#model-version").inner_text() == version
    assert "0.9811" in page.locator("#model table").inner_text()  # the version's own test figures
    rng = np.random.default_rng(0)
    drop_file(page, "dropped scan.png", png(rng, 96))  # 96 pixels: above abstain.min_side
    row = page.locator('#verdicts tr[data-file="dropped scan.png"]')
    row.wait_for(timeout=SECONDS)
    assert any(label in row.locator("td.label").inner_text() for label in ("normal", "tumor"))
    result = page.locator("#drop-result img")
    result.wait_for(timeout=SECONDS)
    wait_loaded(result)
    row.locator("summary").click()  # the heat map, one click away in the table
    heat = row.locator("img")
    heat.wait_for(timeout=SECONDS)
    wait_loaded(heat)
    for i in range(4):  # a fuller page for the picture
        (w.input / f"scan-{i}.png").write_bytes(png(rng, 96 if i else 32))  # 32 pixels: abstained
    (w.input / "scan-5.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    page.locator('#failed li[data-file="scan-5.png"]').wait_for(timeout=SECONDS)
    expect(page.locator("#verdicts tr[data-outcome]")).to_have_count(6, timeout=SECONDS)
    page.set_viewport_size({"width": 1100, "height": 1400})
    shot = os.environ.get("TUMORD_SCREENSHOT")
    page.screenshot(path=str(REPO / shot if shot else tmp_path / "web-page.png"), full_page=True)
    assert errors == []
    assert w.stop() == 0


def test_a_failed_upload_shows_its_reason(web, page):
    """A file the service cannot judge, chosen with the file picker, shows why; so do one the server
    refuses before writing it and one over the size limit, refused before it is sent."""
    w = web(watch={"max_bytes": 5000}).start()
    w.wait_for("service.ready")
    errors = open_page(page, w)
    page.set_input_files("#file", files=[{"name": "broken.png", "mimeType": "image/png",
                                          "buffer": b"\x89PNG\r\n\x1a\n not really"}])
    expect(page.locator("#drop-result")).to_contain_text("broken.png failed", timeout=SECONDS)
    assert "PNG" in page.locator("#drop-result").inner_text()  # the decoder's reason, as in the error JSON
    page.locator('#failed li[data-file="broken.png"] .reason').wait_for(timeout=SECONDS)
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    expect(page.locator("#drop-result")).to_contain_text("refused", timeout=SECONDS)
    assert "not an image file name" in page.locator("#drop-result").inner_text()
    page.set_input_files("#file", files=[{"name": "big.png", "mimeType": "image/png", "buffer": b"\0" * 9000}])
    expect(page.locator("#drop-result")).to_contain_text("big.png was refused", timeout=SECONDS)
    assert "it is 8.8 KiB; the limit is 4.9 KiB (watch.max_bytes)" in page.locator("#drop-result").inner_text()
    assert [e for e in errors if "400" not in e] == []  # the browser reports the refused upload itself
    assert w.stop() == 0


def test_readyz_stays_200_through_a_hot_swap_while_the_page_shows_the_new_model(web, page):
    w = web().start()
    w.wait_for("service.ready")
    errors = open_page(page, w)
    answers: list[int] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(w.url + "/readyz", timeout=5) as r:
                    answers.append(r.status)
            except urllib.error.HTTPError as e:
                answers.append(e.code)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(0.3)
        new = make_model(w.models, seed=3)
        expect(page.locator("#model-version")).to_have_text(new["version"], timeout=SECONDS)
        w.wait_for("model.swapped")
        time.sleep(0.3)
    finally:
        stop.set()
        poller.join()
    assert len(answers) > 20 and set(answers) == {200}
    assert errors == []
    assert w.stop() == 0


def test_the_page_reads_without_javascript(web, browser):
    """With JavaScript off the page still lists the model, the counts and the verdicts."""
    w = web().start()
    w.wait_for("service.ready")
    (w.input / "plain.png").write_bytes(png(np.random.default_rng(1)))
    w.wait_for("scan.classified")
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(w.url + "/")
        assert page.locator('#verdicts tr[data-file="plain.png"]').count() == 1
        counts = [int(page.locator(f"#count-{k}").inner_text()) for k in ("classified", "abstained")]
        assert sum(counts) == 1  # a 32-pixel scan is below abstain.min_side: counted as abstained
        assert "JavaScript" in page.locator("#drop-result").inner_text()
    finally:
        context.close()
    assert w.stop() == 0
