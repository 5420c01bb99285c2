"""systemd/tumord-receive.service: verifies cleanly, is hardened like the other units (less the
network it exists for), and `tumord receive` works under its system-call filter and without
writable+executable memory, answering a real echoscu and storescu."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.dicom.synth import bundled
from tests.dicom.test_receive import free_port, scu
from tests.support import ROOT, child_env
from tests.systemd.hardened import UNAVAILABLE
from tests.systemd.test_units import (INSTALLED, allowed_syscalls, analyze, directives, needs_analyze,
                                      needs_offline_security, needs_strace, tumord_program)

UNIT = "tumord-receive.service"
# the watch and train units score 0.4; a listener cannot have PrivateNetwork= or deny all
# addresses by default (0.5 + 0.3 + 0.2 of its score), so its bar is the top of systemd's OK band
MAX_EXPOSURE = 1.5


@pytest.fixture
def rendered(tmp_path):
    text = (ROOT / "systemd" / UNIT).read_text()
    (tmp_path / UNIT).write_text(text.replace(INSTALLED, " ".join(tumord_program())))
    return tmp_path


def test_receive_unit_is_a_hardened_notify_service():
    d = directives(UNIT)
    assert d["Type"] == ["notify"] and d["User"] == ["tumord"] and d["Restart"] == ["on-failure"]
    assert d["ExecStart"][0].startswith(f"{INSTALLED} receive ") and "--port 11112" in d["ExecStart"][0]
    assert d["ProtectSystem"] == ["strict"] and d["ReadWritePaths"] == ["/var/lib/tumord/input /var/lib/tumord/output"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices", "MemoryDenyWriteExecute",
                "RestrictSUIDSGID", "LockPersonality"):
        assert d[key] == ["yes"], key
    assert d["CapabilityBoundingSet"] == [""] and "PrivateNetwork" not in d
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert d["SystemCallFilter"] == directives("tumord.service")["SystemCallFilter"]


@needs_analyze
def test_receive_unit_verifies_cleanly(rendered):
    run = analyze("verify", UNIT, cwd=rendered)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


@needs_offline_security
def test_receive_unit_exposure(rendered):
    run = analyze("security", "--offline=true", UNIT, cwd=rendered)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", run.stdout)
    assert match, run.stdout + run.stderr
    print(f"{UNIT}: exposure {match[1]} {match[2]}")
    assert float(match[1]) <= MAX_EXPOSURE, run.stdout


@needs_analyze
@needs_strace
def test_receive_works_under_the_units_system_call_filter(tmp_path):
    """Every call outside the unit's SystemCallFilter fails EPERM (strace injects it), and W+X memory is
    refused; the listener still answers C-ECHO and stores a JPEG 2000 instance, then stops on SIGTERM."""
    allowed = allowed_syscalls(UNIT)
    refuse = "inject=!" + ",".join(f"?{name}" for name in sorted(allowed)) + ":error=EPERM"
    (tmp_path / "input").mkdir()
    port = free_port()
    cmd = ["receive", "--host", "127.0.0.1", "--port", str(port), "--log-json", "--input", str(tmp_path / "input"),
           "--output", str(tmp_path / "output")]
    for module in ("tests.systemd.hardened", "tumord.cli"):  # the second where the kernel lacks PR_SET_MDWE
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=all", "-e", refuse,
                                 sys.executable, "-m", module, *cmd], cwd=ROOT, env=child_env(),
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        line = ""
        while "receive.ready" not in line and proc.poll() is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
        if proc.poll() != UNAVAILABLE:
            break
    assert "receive.ready" in line, proc.stderr.read()[-3000:]
    try:
        assert scu("echoscu", port).returncode == 0
        sent = scu("storescu", port, str(bundled("MR_small_jp2klossless.dcm")), "-cx")
        assert sent.returncode == 0, sent.stderr
        stored = list((tmp_path / "input").glob("*.dcm"))
        assert [p.read_bytes()[128:132] for p in stored] == [b"DICM"]
    finally:
        # SIGTERM to tumord itself, strace's child (as systemd would send it to the main process)
        child = int(open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()[0])
        os.kill(child, signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read()[-3000:]
