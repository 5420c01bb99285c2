"""The HTTP endpoints: what each request gets, independent of the server that carries it.

Path segments are split before they are percent-decoded, so an encoded slash stays inside its
segment; a verdict id is only ever a key into the monitor's records, and static files are a
fixed set read from the package at start. No request string becomes a path.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from tumord.web import page
from tumord.web.metrics import CONTENT_TYPE
from tumord.web.monitor import Monitor
from tumord.web.settings import HttpSettings
from tumord.web.upload import UploadError, Uploads

MAX_LIMIT = 1000
COOKIE = "tumord_token"
OPEN = {"/livez", "/readyz", "/login"}  # health probes and the login form need no token


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict = field(default_factory=dict)


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def as_json(status: int, value) -> Response:
    return Response(status, json.dumps(value, ensure_ascii=False).encode(), "application/json",
                    {"Cache-Control": "no-store"})


def error(status: int, message: str) -> Response:
    return as_json(status, {"error": message})


class App:
    def __init__(self, settings: HttpSettings, monitor: Monitor):
        self.s, self.monitor = settings, monitor
        self.uploads = Uploads(settings.input, settings.max_upload_bytes)
        self.static = page.static_files()

    # --- access ------------------------------------------------------------------------------
    def authorized(self, headers) -> bool:
        if self.s.token is None:
            return True
        given = ""
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer "):].strip()
        else:
            for part in headers.get("Cookie", "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == COOKIE:
                    given = value
        return hmac.compare_digest(given.encode(), self.s.token.encode())

    def host_allowed(self, host: str) -> bool:
        """Without a token, only names of this host: a web page elsewhere cannot rebind its own
        DNS name to 127.0.0.1 and then read or upload through the operator's browser."""
        if self.s.token is not None:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in ("127.0.0.1", "localhost", "[::1]", self.s.bind, f"[{self.s.bind}]")

    # --- dispatch ----------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers, body=None) -> Response:
        url = urlsplit(target)
        segments = url.path.split("/")[1:]  # split first: %2F stays inside a segment
        path = "/" + "/".join(segments)
        if not self.host_allowed(headers.get("Host", "")):
            return text(421, "unknown Host; use the address tumord listens on")
        if path not in OPEN and not path.startswith("/static/") and not self.authorized(headers):
            if method == "GET" and path == "/":
                return Response(303, headers={"Location": "/login"})
            return Response(401, b"a token is required (Authorization: Bearer, see docs/http.md)\n",
                            headers={"WWW-Authenticate": "Bearer"})
        query = parse_qs(url.query, keep_blank_values=True)
        if method == "POST":
            if path == "/api/upload":
                return self.upload(query, headers, body)
            if path == "/login":
                return self.login(headers, body)
            return text(405 if path in ("/", "/livez", "/readyz", "/metrics") else 404, "not found")
        if method not in ("GET", "HEAD"):
            return text(405, "method not allowed")
        if path == "/livez":
            return text(200, "alive")
        if path == "/readyz":
            ready, why = self.monitor.ready()
            return text(200 if ready else 503, why)
        if path == "/metrics":
            return Response(200, self.monitor.metrics.exposition(), CONTENT_TYPE)
        if path == "/":
            return Response(200, page.render(self.monitor, "live" in query, self.s.max_upload_bytes).encode(),
                            "text/html; charset=utf-8", {"Cache-Control": "no-store"})
        if path == "/login":
            return Response(200, page.login_form().encode(), "text/html; charset=utf-8")
        if path == "/api/verdicts":
            return self.verdicts(query)
        if path == "/api/summary":
            return as_json(200, self.monitor.snapshot())
        if len(segments) in (3, 4) and segments[:2] == ["api", "verdicts"]:
            try:
                entry_id = unquote(segments[2], errors="strict")
            except UnicodeDecodeError:
                return error(404, "no verdict with this id")
            return self.verdict(entry_id, segments[3:])
        if len(segments) == 2 and segments[0] == "static" and segments[1] in self.static:
            content_type, data = self.static[segments[1]]
            return Response(200, data, content_type, {"Cache-Control": "max-age=300"})
        return text(404, "not found")

    # --- endpoints ---------------------------------------------------------------------------
    def verdicts(self, query: dict) -> Response:
        since = query.get("since", [""])[-1]
        limit = query.get("limit", ["50"])[-1]
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            return error(400, f"limit={limit!r}: expected a whole number from 1 to {MAX_LIMIT}")
        seq = since_time = None
        if since.isdigit():
            seq = int(since)
        elif since:
            if not page.looks_like_time(since):
                return error(400, f"since={since!r}: expected a sequence number (the `seq` of a verdict) or "
                                  "a UTC time such as 2026-12-02T10:00:00Z")
            since_time = since
        return as_json(200, self.monitor.verdicts(seq, since_time, int(limit)))

    def verdict(self, entry_id: str, rest: list[str]) -> Response:
        entry = self.monitor.find(entry_id)
        if entry is None:
            return error(404, "no verdict with this id among those kept in memory (see /api/verdicts)")
        if not rest:
            return as_json(200, {**entry.public(), "record": entry.record})
        if rest != ["heatmap.png"]:
            return error(404, "not found")
        if entry.heatmap is None:
            return error(404, "this verdict has no heat map (watch.explain is off, or it failed)")
        try:
            data = entry.heatmap.read_bytes()
        except OSError:
            return error(404, "the heat map is no longer in the output folder")
        return Response(200, data, "image/png", {"Cache-Control": "max-age=3600"})

    def upload(self, query: dict, headers, body) -> Response:
        # a type outside the three "simple" ones makes browsers ask before any cross-site POST
        if headers.get("Content-Type", "").split(";")[0].strip() != "application/octet-stream":
            return error(415, "send the file's bytes as the body with Content-Type: application/octet-stream")
        length = headers.get("Content-Length")
        try:
            name = self.uploads.save(query.get("name", [""])[-1], int(length) if length and length.isdigit()
                                     else None, body)
        except UploadError as e:
            return error(e.status, e.reason)
        except OSError as e:
            return error(507, f"the scan could not be written to the input folder ({e.strerror})")
        return as_json(201, {"file": name})

    def login(self, headers, body) -> Response:
        length = headers.get("Content-Length", "0")
        form = parse_qs(body.read(min(int(length), 4096)).decode("utf-8", "replace") if length.isdigit() else "")
        token = form.get("token", [""])[-1].strip()
        if self.s.token is None or not hmac.compare_digest(token.encode(), self.s.token.encode()):
            return Response(401, page.login_form("That token is not right.").encode(), "text/html; charset=utf-8")
        return Response(303, headers={"Location": "/",
                                      "Set-Cookie": f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"})
