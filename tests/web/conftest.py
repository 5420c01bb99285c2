"""A real `tumord watch` with its HTTP server on a free port, and a real browser (Debian's chromium)."""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest
import yaml

from tests.service.conftest import Watch, make_model, png  # noqa: F401 (png: re-exported for the tests)

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


class WebWatch(Watch):
    """Watch with an `http:` section; `url` is read from the service's http.listening log line."""

    def __init__(self, root, http: dict | None = None, **kw):
        super().__init__(root, **kw)
        cfg = yaml.safe_load((root / "config.yaml").read_text())
        cfg["http"] = {"enabled": True, "port": 0, **(http or {})}
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
        self.url = ""

    def start(self) -> "WebWatch":
        super().start()
        self.url = self.wait_for("http.listening")[0]["url"].rstrip("/")
        return self

    def get(self, path: str, headers: dict | None = None, method: str = "GET", data: bytes | None = None):
        """(status, headers, body) of one request; HTTP errors are answers too."""
        req = urllib.request.Request(self.url + path, headers=headers or {}, method=method, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, path: str):
        status, _, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)


@pytest.fixture
def web(tmp_path):
    """Makes WebWatch processes in tmp_path (with a current tiny model) and kills any left running."""
    made: list[WebWatch] = []
    make_model(tmp_path / "models")

    def factory(**kw) -> WebWatch:
        w = WebWatch(tmp_path, **kw)
        made.append(w)
        return w

    yield factory
    for w in made:
        w.kill()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's browser, but Debian's chromium: nothing is downloaded at test time."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} not found (Debian package: chromium; .ci/run installs it)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": BROWSER_ARGS}
