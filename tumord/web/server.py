"""The HTTP server inside `tumord watch`: the standard library's, in a thread of the same process.

Why this server: a handful of clients (an operator's browser, a Prometheus scraper, a probe) ask
small questions; Python's http.server does that without another dependency or process, and
everything it does is visible here. Its weaknesses are bounded: at most MAX_CLIENTS requests are
handled at once (others wait in the listen queue, never as extra threads), each connection
closes after one request, and a client that stalls is dropped after TIMEOUT seconds.
"""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tumord.config import ConfigError
from tumord.web.api import App, Response
from tumord.web.monitor import Monitor
from tumord.web.settings import HttpSettings

MAX_CLIENTS = 8
TIMEOUT = 10.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Handler(BaseHTTPRequestHandler):
    server_version = "tumord"
    sys_version = ""
    timeout = TIMEOUT

    def _serve(self, method: str) -> None:
        app: App = self.server.app
        try:
            response = app.handle(method, self.path, self.headers, self.rfile if method == "POST" else None)
        except Exception as e:  # a bug in one request must not end the server
            self.server.log.error("http.error", method=method, error=f"{type(e).__name__}: {e}")
            response = Response(500, b"internal error; see the service log\n")
        self.send_response(response.status)
        for key, value in {**SECURITY_HEADERS, **response.headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def do_GET(self):  # noqa: N802 (http.server's names)
        self._serve("GET")

    def do_HEAD(self):  # noqa: N802
        self._serve("HEAD")

    def do_POST(self):  # noqa: N802
        self._serve("POST")

    def log_message(self, format, *args):  # noqa: A002
        pass  # requests are not logged: the service log stays about scans


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, app: App, log):
        self.app, self.log = app, log
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        self.slots.acquire()  # the accept loop waits here while MAX_CLIENTS requests run
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class HttpService:
    """Binds at construction (a taken port is a ConfigError before the model loads), serves once started."""

    def __init__(self, settings: HttpSettings, monitor: Monitor, log):
        self.settings, self.log = settings, log
        app = App(settings, monitor)
        for p in app.uploads.sweep():
            log.info("http.upload_swept", file=p.name, reason="temporary upload left by an interrupted run")
        try:
            self.server = Server((settings.bind, settings.port), app, log)
        except OSError as e:
            raise ConfigError(f"http.bind/http.port: cannot listen on {settings.bind} port {settings.port} "
                              f"({e.strerror})") from None
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> None:
        self.thread.start()
        self.log.info("http.listening", url=self.url, token=self.settings.token is not None)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
