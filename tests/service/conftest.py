"""Helpers for the service tests: model folders, generated scans, and a real `tumord watch` process."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.synthetic import scan, tiny_model

REPO = Path(__file__).resolve().parents[2]

FAST = {  # short windows so that tests take seconds
    "settle_seconds": 0.05,
    "stable_seconds": 0.5,
    "rescan_seconds": 1.0,
    "model_poll_seconds": 0.2,
    "poll_seconds": 0.2,
}


def make_model(models_dir: Path, seed: int = 0, size: int = 32, classes=("normal", "tumor"),
               promote: bool = True) -> dict:
    """A tiny model in models/versions/<version>/model.npz, made current unless promote=False."""
    tmp = models_dir / f".new-{seed}.npz"
    models_dir.mkdir(parents=True, exist_ok=True)
    meta = tiny_model(tmp, size=size, classes=classes, seed=seed)
    folder = models_dir / "versions" / meta["version"]
    folder.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder / "model.npz")
    if promote:
        point(models_dir, meta["version"])
    return meta


def point(models_dir: Path, version: str) -> None:
    """Makes `version` current, atomically, as a registry would."""
    tmp = models_dir / ".current.json.tmp"
    tmp.write_text(json.dumps({"current": version}))
    os.replace(tmp, models_dir / "current.json")


def png(rng: np.random.Generator, size: int = 32) -> bytes:
    ok, buf = cv2.imencode(".png", scan(bool(rng.integers(2)), rng, size))
    assert ok
    return buf.tobytes()


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Writes the file beside the folder, then moves it in: how scanners deliver complete files."""
    staging = folder.parent / "staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / name
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    return folder / name


def staged(w: "Watch", rng: np.random.Generator, n: int, prefix: str = "s", name: str = "{prefix}{i:03d}.png"
           ) -> dict[str, str]:
    """n distinct PNG scans in a staging folder beside input/ (not yet dropped); name -> SHA-256."""
    staging = w.root / "staging"
    staging.mkdir(exist_ok=True)
    digests = {}
    for i in range(n):
        data = png(rng)
        file = name.format(prefix=prefix, i=i)
        (staging / file).write_bytes(data)
        digests[file] = hashlib.sha256(data).hexdigest()
    return digests


def verdicts(output: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(output.glob("*.json"))]


def csv_rows(output: Path) -> list[dict]:
    with open(output / "verdicts.csv", encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def ledger_rows(output: Path) -> list[dict]:
    db = sqlite3.connect(output / "ledger.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM scans ORDER BY id")]
    finally:
        db.close()


def leftovers(output: Path) -> list[Path]:
    """Temporary or partial files anywhere under output/."""
    return [p for p in output.rglob("*") if p.name.startswith(".tumord-tmp.")]


@contextmanager
def systemd_messages():
    """A notify socket as systemd listens on it: yields (its NOTIFY_SOCKET address, the messages so far)."""
    name = f"tumord-notify-{os.getpid()}-{time.monotonic_ns()}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + name)
    rx.settimeout(0.2)
    got: list[str] = []
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                got.append(rx.recv(4096).decode())
            except TimeoutError:
                pass

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        yield "@" + name, got
    finally:
        stop.set()
        listener.join()
        rx.close()


class Watch:
    """`python -m tumord.cli watch` as a child process; its JSON log lines are collected."""

    def __init__(self, root: Path, watch: dict | None = None, args=(), env: dict | None = None, wrap=(),
                 tool=()):
        """wrap: a command the service runs under (setpriv); tool: a test tool module and its arguments
        that runs the CLI (tests/service/stoppoint.py)."""
        self.root, self.wrap = root, list(wrap)
        self.module = ["-m", tool[0], *tool[1:], "--"] if tool else ["-m", "tumord.cli"]
        self.input, self.output, self.models = root / "input", root / "output", root / "models"
        self.input.mkdir(exist_ok=True)
        cfg = {"paths": {"input": "input", "output": "output", "models": "models"}, "watch": {**FAST, **(watch or {})}}
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
        self.args, self.env = list(args), env or {}
        self.proc: subprocess.Popen | None = None
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._new = threading.Condition()

    def start(self) -> "Watch":
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update({"PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1", **self.env})  # stacks on SIGABRT (stop)
        self.proc = subprocess.Popen([*self.wrap, sys.executable, *self.module, "watch", "--log-json", *self.args],
                                     cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines, self.raw = [], []
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()
        return self

    def _read(self, stream) -> None:
        for line in stream:
            with self._new:
                self.raw.append(line)
                try:
                    self.lines.append(json.loads(line))
                except ValueError:
                    pass
                self._new.notify_all()

    def events(self, name: str) -> list[dict]:
        with self._new:
            return [r for r in self.lines if r.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                found = [r for r in self.lines if r.get("event") == name]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._new.wait(0.2)):
                    raise AssertionError(f"no {count} x {name} within {timeout}s; log:\n{''.join(self.raw[-30:])}")
                self._new.wait(min(left, 0.5))

    def wait_until(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                what = what() if callable(what) else what  # a callable says what is left at the time
                raise AssertionError(f"{what} not reached within {timeout}s; log:\n{''.join(self.raw[-30:])}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the service exited ({self.proc.returncode}); log:\n{''.join(self.raw[-30:])}")
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code. The timeout is the units' TimeoutStopSec: the service drains
        for at most watch.drain_seconds, but a loaded CI machine once took over 10 s to see it exit.
        A service still running then is made to print every thread's stack (faulthandler, SIGABRT)."""
        self.send(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGABRT)
            self.proc.wait(10)
            time.sleep(0.5)  # the reader thread takes the last lines
            raise AssertionError(f"still running {timeout}s after SIGTERM; log and stacks:\n"
                                 f"{''.join(self.raw[-80:])}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def service(tmp_path):
    """Makes Watch processes in tmp_path (with a current tiny model) and kills any left running."""
    made: list[Watch] = []
    make_model(tmp_path / "models")

    def factory(**kw) -> Watch:
        w = Watch(tmp_path, **kw)
        made.append(w)
        return w

    yield factory
    for w in made:
        w.kill()


class Notify:
    """A socket standing in for systemd's notify socket: every STATUS=, WATCHDOG=1 and READY=1 it receives."""

    def __init__(self):
        self.name = f"tumord-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def env(self, watchdog_usec: int = 400000) -> dict:
        return {"NOTIFY_SOCKET": "@" + self.name, "WATCHDOG_USEC": str(watchdog_usec)}

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), dict(line.split("=", 1) for line in data.splitlines() if "=" in line)))

    def status(self) -> str:
        return next((m["STATUS"] for _, m in reversed(self.got) if "STATUS" in m), "")

    def wait_status(self, *words: str, timeout: float = 20.0) -> str:
        """The latest STATUS once it says all of `words`."""
        deadline = time.monotonic() + timeout
        while not all(w in self.status() for w in words):
            assert time.monotonic() < deadline, f"STATUS never said {words!r}; last: {self.status()!r}"
            time.sleep(0.05)
        return self.status()

    def pings_since(self, t: float) -> int:
        return sum(1 for at, m in self.got if at >= t and m.get("WATCHDOG") == "1")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify():
    n = Notify()
    yield n
    n.close()


@pytest.fixture
def rng():
    return np.random.default_rng(0)

