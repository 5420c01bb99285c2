"""Shared pieces for tests that run real tumord processes: small settings, a work folder, a registry check, the CLI."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from tests.synthetic import SMALL_MLP, scan, tiny_model, write_dataset
from tumord.atomic import TEMP_PREFIX
from tumord.model import checkpoint, registry

ROOT = Path(__file__).resolve().parents[1]

# a small network on 32x32 scans: a training run takes about a second
SMALL = {
    **SMALL_MLP,
    "registry": {"gate": {"min_images": 10}},
    "watch": {"model_poll_seconds": 0.2, "settle_seconds": 0.05},
}

# a candidate that learns nothing: weights and batch-norm statistics stay as initialized
# (recomputed statistics alone make a random network fairly good at the generated scans)
# (from scratch: by default `tumord train` fine-tunes the current model)
UNTRAINED = ("--from-scratch", "--set", "train.lr=0", "--set", "train.precise_bn_batches=0")


def workdir(root: Path, per_class: int = 60, extra: dict | None = None) -> Path:
    """data/ with generated scans, input/, output/, models/ and a config.yaml of small settings."""
    write_dataset(root / "data", per_class=per_class, size=64)
    for name in ("input", "output", "models"):
        (root / name).mkdir(exist_ok=True)
    cfg = json.loads(json.dumps(SMALL))
    for section, values in (extra or {}).items():
        cfg.setdefault(section, {}).update(values)
    cfg["paths"] = {"input": str(root / "input"), "output": str(root / "output"),
                    "models": str(root / "models"), "cache": str(root / "cache"),
                    "training": str(root / "training")}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def register_tiny(models_dir: Path, tmp: Path, seed: int = 0) -> str:
    """An untrained (poor) model registered and made current; returns its version."""
    tiny_model(tmp / f"tiny{seed}.npz", size=32, seed=seed)
    version = registry.add_model(models_dir, tmp / f"tiny{seed}.npz")
    registry.promote(models_dir, version)
    return version


def tumord(*args: str, cwd: Path, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Runs `python -m tumord.cli ARGS` as a real process."""
    return subprocess.run([sys.executable, "-m", "tumord.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=child_env(), **kw)


def child_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    return env


def check_registry(models_dir: Path, expect_current: str | None = None) -> dict:
    """Asserts the registry is consistent: every visible version whole, the pointer valid and loadable."""
    versions = registry.version_names(models_dir)
    for v in versions:
        folder = registry.versions_dir(models_dir) / v
        model = checkpoint.load(folder / registry.MODEL_FILE)  # raises on a partial or corrupt file
        assert model.identity["version"] == v, (v, model.identity)
        report = folder / registry.REPORT_FILE
        if report.exists():
            assert json.loads(report.read_text())["model"]["version"] == v
    pointer = json.loads((models_dir / registry.POINTER).read_text())
    assert pointer["current"] in versions, pointer
    assert all(isinstance(v, str) for v in pointer["history"])
    checkpoint.load(registry.current_model_path(models_dir))
    if expect_current is not None:
        assert pointer["current"] == expect_current
    visible = {p.name for p in models_dir.iterdir() if not p.name.startswith(".")}
    assert visible <= {"versions", "current.json", "train.lock"}, visible
    return pointer


def leftovers(models_dir: Path) -> list[str]:
    """Work files a killed run may leave (hidden, never read by anyone)."""
    return sorted(p.name for p in models_dir.iterdir()
                  if p.name.startswith((registry.STAGING_PREFIX, registry.TRASH_PREFIX, ".current.json.", TEMP_PREFIX)))


class Watch:
    """`tumord watch` as a real process, with a notify socket standing in for systemd."""

    def __init__(self, root: Path, wrap: tuple[str, ...] = (), module: str = "tumord.cli"):
        self.root, self.module = root, module
        self.sock_dir = tempfile.mkdtemp(prefix="tumord-notify-")  # short: socket paths max 107 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(self.sock_dir, "n"))
        self.sock.settimeout(0.2)
        self.messages: list[dict] = []
        self.log = open(root / "watch.log", "w")
        # as under WatchdogSec=1s: STATUS= and WATCHDOG=1 every half second
        env = dict(child_env(), NOTIFY_SOCKET=os.path.join(self.sock_dir, "n"), WATCHDOG_USEC="1000000")
        cmd = [*wrap, sys.executable, "-m", module, "watch", "--config", str(root / "config.yaml")]
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def _receive(self) -> None:
        try:
            while True:
                data = self.sock.recv(4096).decode()
                self.messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
        except (TimeoutError, BlockingIOError):
            pass

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(m.get("READY") == "1" for m in self.messages):
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "no READY=1 from the service\n" + self.output()
            self._receive()

    def status(self) -> str:
        self._receive()
        return next((m["STATUS"] for m in reversed(self.messages) if "STATUS" in m), "")

    def wait_status(self, text: str, timeout: float = 5) -> str:
        """The latest STATUS= line once it contains text (the status line `systemctl status` shows)."""
        deadline = time.monotonic() + timeout
        while text not in self.status():
            assert time.monotonic() < deadline, f"STATUS never mentioned {text}: {self.status()!r}"
        return self.status()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.root / "watch.log").read_text()[-4000:]

    def main_pid(self) -> int:
        """The service's pid: the child when a tool such as strace runs it, not its judge process."""
        pid = self.proc.pid
        for _ in range(50):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", self.module.encode()]:
                return pid
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if not children.exists() or not children.read_text().split():
                return pid
            pid = int(children.read_text().split()[0])
        return pid

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.kill(self.main_pid(), signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            self.sock.close()
            os.unlink(os.path.join(self.sock_dir, "n"))
            os.rmdir(self.sock_dir)


def drop_scan(input_dir: Path, name: str, tumor: bool, rng: np.random.Generator) -> None:
    """Writes a generated scan under a temporary name and renames it, as a careful copier does."""
    ok, png = cv2.imencode(".png", scan(tumor, rng, 64))
    tmp = input_dir / f".{name}.part"
    tmp.write_bytes(png.tobytes())
    os.replace(tmp, input_dir / name)


def verdicts(output_dir: Path) -> list[dict]:
    """Every verdict JSON in output/, oldest classification first."""
    found = [json.loads(p.read_text()) for p in output_dir.glob("*.json") if not p.name.startswith(".")]
    return sorted(found, key=lambda v: v["classified_at"])


def wait_for_verdicts(output_dir: Path, count: int, watch: Watch, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = verdicts(output_dir)
        if len(found) >= count:
            return found
        assert watch.proc.poll() is None, watch.output()
        assert time.monotonic() < deadline, f"{len(found)} of {count} verdicts\n" + watch.output()
        time.sleep(0.05)
